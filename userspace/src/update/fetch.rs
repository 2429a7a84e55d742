//! Bounded, conditional HTTP(S) and file:// downloads: connect and total
//! timeouts, a body size limit enforced while streaming, ETag and
//! If-Modified-Since, and 429 told apart from other refusals.

use std::{path::PathBuf, time::Duration};

use reqwest::{StatusCode, header};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "{url}: the server answered HTTP 429 (too many requests); not asking again before the next day"
    )]
    TooMany { url: String },
    #[error(
        "{url}: refused our credentials (HTTP {status}); check account_id and license_key_file"
    )]
    Credentials { url: String, status: u16 },
    #[error("{url}: the body is over the limit of {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: timed out (connect or whole transfer)")]
    Timeout { url: String },
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A file:// source could not be read (missing, not a regular file).
    #[error(transparent)]
    File(crate::input::InputError),
    #[error("{url}: not a URL this client fetches (http, https or file)")]
    Scheme { url: String },
    #[error(
        "{url}: redirected (HTTP {status}) to {location}, which is not followed: only http(s) redirects are, at most 5"
    )]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },
    #[error("{url}: a file:// URL needs an absolute path (file:///...)")]
    Relative { url: String },
    /// `ca_file` could not be read or holds no PEM certificate.
    #[error("ca_file {}: {why}", path.display())]
    Ca { path: PathBuf, why: String },
}

/// Validators of the copy we have, sent so an unchanged file is not sent.
#[derive(Clone, Debug, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What a download gave.
#[derive(Debug)]
pub enum Got {
    /// 304: the server says our copy is current; no body came.
    NotModified,
    /// A body, with the validators to send next time.
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

/// The limits every download is held to, and what it trusts.
#[derive(Clone, Debug)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_size: u64,
    /// PEM certificates trusted besides the built-in web roots.
    pub ca_file: Option<PathBuf>,
}

/// The certificates of a PEM file (a bundle may hold several).
fn certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let ca = |why: String| FetchError::Ca {
        path: path.to_path_buf(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca(
            "expected PEM certificates (-----BEGIN CERTIFICATE-----), found none".into(),
        ));
    }
    Ok(certs)
}

/// One HTTP client for a whole update.
pub struct Client {
    http: reqwest::Client,
    limits: Limits,
}

impl Client {
    pub fn new(limits: Limits) -> Result<Self, FetchError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &limits.ca_file {
            for cert in certificates(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout)
            .user_agent(concat!("regionwall/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|source| FetchError::Http {
                url: String::new(),
                source,
            })?;
        Ok(Self { http, limits })
    }

    /// GETs `url` (http, https or file), conditionally on `have`, with
    /// optional basic credentials.
    pub async fn get(
        &self,
        url: &str,
        have: &Validators,
        auth: Option<(&str, &str)>,
    ) -> Result<Got, FetchError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(FetchError::Relative { url: url.into() });
            }
            return self.file(url, path);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FetchError::Scheme { url: url.into() });
        }
        let mut req = self.http.get(url);
        if let Some(etag) = &have.etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &have.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, lm);
        }
        if let Some((user, pass)) = auth {
            req = req.basic_auth(user, Some(pass));
        }
        let err = |source: reqwest::Error| {
            if source.is_timeout() {
                FetchError::Timeout { url: url.into() }
            } else {
                FetchError::Http {
                    url: url.into(),
                    source,
                }
            }
        };
        let mut resp = req.send().await.map_err(err)?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(Got::NotModified),
            StatusCode::TOO_MANY_REQUESTS => return Err(FetchError::TooMany { url: url.into() }),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) if auth.is_some() => {
                return Err(FetchError::Credentials {
                    url: url.into(),
                    status: s.as_u16(),
                });
            }
            s if s.is_redirection() => {
                // reqwest follows http(s) redirects itself; one it left is
                // to another scheme (file://, ftp://) or has no Location.
                return Err(FetchError::Redirect {
                    url: url.into(),
                    status: s.as_u16(),
                    location: resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map_or_else(|| "nowhere (no Location)".into(), str::to_string),
                });
            }
            s if !s.is_success() => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status: s.as_u16(),
                });
            }
            _ => {}
        }
        let max = self.limits.max_size;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge {
                url: url.into(),
                max,
            });
        }
        let header_text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header_text(header::ETAG),
            last_modified: header_text(header::LAST_MODIFIED),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err(FetchError::TooLarge {
                    url: url.into(),
                    max,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Got::Body { bytes, validators })
    }

    fn file(&self, url: &str, path: &str) -> Result<Got, FetchError> {
        let path = PathBuf::from(path);
        let limits = crate::input::Limits {
            max_file_size: self.limits.max_size,
        };
        match crate::input::read(&path, limits) {
            Ok(bytes) => Ok(Got::Body {
                bytes,
                validators: Validators::default(),
            }),
            Err(crate::input::InputError::TooLarge { .. }) => Err(FetchError::TooLarge {
                url: url.into(),
                max: self.limits.max_size,
            }),
            Err(e) => Err(FetchError::File(e)),
        }
    }
}

/// The hex digest a published checksum file holds for the file `name`
/// (the last path component of its URL): a word of 32 (md5) or 64
/// (sha256) hex digits, in any of the usual layouts (`<hex>  name`,
/// `<hex> *name`, `MD5 (name) = <hex>`, a bare digest). A file of one
/// entry is taken whatever it names; of several (`SHA256SUMS`), only the
/// line naming `name` counts.
#[must_use]
pub fn published_digest(text: &str, name: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let digest = line
                .split(|c: char| !c.is_ascii_hexdigit())
                .find(|w| w.len() == 32 || w.len() == 64)?;
            Some((line, digest))
        })
        .collect();
    let names = |line: &str| {
        line.split(|c: char| c.is_whitespace() || "()*=".contains(c))
            .any(|w| !w.is_empty() && w.rsplit('/').next() == Some(name))
    };
    match entries.as_slice() {
        [(_, only)] => Some(only),
        _ => entries.iter().find(|(l, _)| names(l)).map(|(_, d)| d),
    }
    .map(|d| d.to_ascii_lowercase())
}

/// The file name a URL ends in (no query or fragment).
#[must_use]
pub fn url_file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// The digest of `bytes` of the same kind (md5 or sha256) as `published`.
#[must_use]
pub fn digest_like(published: &str, bytes: &[u8]) -> String {
    if published.len() == 32 {
        md5_hex(bytes)
    } else {
        sha256_hex(bytes)
    }
}

#[must_use]
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(bytes))
}

#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_published_layouts() {
        let md5 = md5_hex(b"x");
        assert_eq!(
            published_digest(
                &format!("MD5 (delegated-apnic-latest) = {md5}\n"),
                "delegated-apnic-latest"
            ),
            Some(md5.clone())
        );
        let sha = sha256_hex(b"x");
        assert_eq!(
            published_digest(
                &format!("{}  delegated-ripencc-latest\n", sha.to_uppercase()),
                "delegated-ripencc-latest"
            ),
            Some(sha.clone())
        );
        assert_eq!(published_digest("no digest here", "f"), None);
        // SHA256SUMS: the line naming the file, wherever it is.
        let other = sha256_hex(b"y");
        let sums = format!("{other}  delegated-apnic-latest\n{sha} *./delegated-ripencc-latest\n");
        assert_eq!(
            published_digest(&sums, "delegated-ripencc-latest"),
            Some(sha.clone())
        );
        assert_eq!(published_digest(&sums, "absent"), None);
        assert_eq!(
            published_digest(&format!("{sha}\n"), "any"),
            Some(sha.clone())
        );
        assert_eq!(
            url_file_name("https://example.org/a/SHA256SUMS?x=1#y"),
            "SHA256SUMS"
        );
        assert_eq!(digest_like(&md5, b"x"), md5);
        assert_eq!(digest_like(&sha, b"x"), sha);
    }
}
