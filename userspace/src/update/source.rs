//! One source fetched into the staging directory: skipped within its
//! interval or back-off, asked conditionally (published checksum, ETag,
//! If-Modified-Since, same content, MaxMind md5), or written there.

use std::path::Path;

use super::{
    Outcome, UpdateError, archive,
    fetch::{self, Client, FetchError, Got, Validators},
    maxmind, next_day,
    status::SourceStatus,
    store::{self, Staging},
};
use crate::policy::{Fetch, How, Plan};

/// Fetches one source into `staging`; `Some(outcome)` when nothing new
/// came (the caller carries the current copy over).
pub(super) async fn one(
    client: &Client,
    plan: &Plan,
    f: &Fetch,
    have: Option<&Path>,
    staging: &Staging,
    st: &mut SourceStatus,
    now: u64,
) -> Result<Option<Outcome>, UpdateError> {
    // Times recorded ahead of `now` mean the clock moved back (a router
    // whose RTC was wrong until NTP): a back-off more than a day ahead
    // and a last fetch in the future do not hold the source back.
    if let Some(until) = st.backoff_until.filter(|u| *u > now && *u <= next_day(now)) {
        return if have.is_some() {
            Ok(Some(Outcome::Skipped("backed off after HTTP 429")))
        } else {
            Err(UpdateError::BackedOff { until })
        };
    }
    let recent = st
        .last_fetch
        .is_some_and(|t| t <= now && now < t.saturating_add(plan.interval.as_secs()));
    if recent && have.is_some() {
        return Ok(Some(Outcome::Skipped("fetched within the interval")));
    }
    // Every attempt counts against the interval, failed ones too: a
    // broken source is not asked again and again.
    st.last_attempt = Some(now);
    st.last_fetch = Some(now);
    let result = fetch_one(client, plan, f, have, staging, st).await;
    // Success is recorded by the caller once the whole update is
    // verified and live, never for a download alone.
    if let Err(UpdateError::Fetch(FetchError::TooMany { .. })) = &result {
        st.backoff_until = Some(next_day(now));
    }
    result
}

async fn fetch_one(
    client: &Client,
    plan: &Plan,
    f: &Fetch,
    have: Option<&Path>,
    staging: &Staging,
    st: &mut SourceStatus,
) -> Result<Option<Outcome>, UpdateError> {
    let dest = staging.path().join(&f.target);
    match &f.how {
        How::MaxMind {
            endpoint,
            edition,
            account_id,
            license_key_file,
        } => {
            let current = have.and_then(|p| std::fs::read(p).ok());
            let e = maxmind::Edition {
                endpoint,
                edition,
                account_id,
                license_key_file,
            };
            match maxmind::update(client, &e, current.as_deref(), plan.max_size).await? {
                maxmind::Outcome::Unchanged { .. } => Ok(Some(Outcome::Unchanged("same md5"))),
                maxmind::Outcome::New { mmdb, md5 } => {
                    store::write_file(&dest, &mmdb)?;
                    st.checksum = Some(md5);
                    Ok(None)
                }
            }
        }
        How::Url { url, checksum_url } => {
            let mut published = None;
            if let Some(curl) = checksum_url {
                let digest = published_digest(client, curl, url).await?;
                if have.is_some() && st.checksum.as_deref() == Some(digest.as_str()) {
                    return Ok(Some(Outcome::Unchanged("same published checksum")));
                }
                published = Some(digest);
            }
            // A published checksum other than ours says the file changed:
            // asked unconditionally, so a stale ETag or date cannot answer
            // 304 for it.
            let validators = if have.is_some() && published.is_none() {
                Validators {
                    etag: st.etag.clone(),
                    last_modified: st.last_modified.clone(),
                }
            } else {
                Validators::default()
            };
            // A 304 only answers a conditional request.
            let conditional = validators.etag.is_some() || validators.last_modified.is_some();
            let (bytes, validators) = match client.get(url, &validators, None).await? {
                Got::NotModified if conditional => {
                    return Ok(Some(Outcome::Unchanged("304 not modified")));
                }
                Got::NotModified => {
                    return Err(UpdateError::Protocol {
                        url: url.clone(),
                        why: "answered 304 to an unconditional request".into(),
                    });
                }
                Got::Body { bytes, validators } => (bytes, validators),
            };
            let sha256 = fetch::sha256_hex(&bytes);
            if have.is_some() && st.sha256.as_deref() == Some(sha256.as_str()) {
                // Still the live copy's validators now: the next request
                // is conditional on what the server sends today.
                st.etag = validators.etag;
                st.last_modified = validators.last_modified;
                return Ok(Some(Outcome::Unchanged("same content")));
            }
            if let Some(expected) = &published {
                let got = fetch::digest_like(expected, &bytes);
                if &got != expected {
                    return Err(UpdateError::Checksum {
                        url: url.clone(),
                        expected: expected.clone(),
                        got,
                    });
                }
            }
            if f.format == "country-dir" {
                archive::country_dir(&bytes, &dest, plan.max_size).map_err(|why| {
                    UpdateError::Archive {
                        url: url.clone(),
                        why,
                    }
                })?;
            } else {
                store::write_file(&dest, &bytes)?;
            }
            st.etag = validators.etag;
            st.last_modified = validators.last_modified;
            st.checksum = published;
            st.sha256 = Some(sha256);
            Ok(None)
        }
    }
}

/// The digest `checksum_url` publishes for the file of `url`.
async fn published_digest(client: &Client, curl: &str, url: &str) -> Result<String, UpdateError> {
    let name = fetch::url_file_name(url);
    let no_digest = || UpdateError::NoDigest {
        url: curl.to_string(),
        name: name.to_string(),
    };
    let Got::Body { bytes, .. } = client.get(curl, &Validators::default(), None).await? else {
        return Err(no_digest());
    };
    fetch::published_digest(&String::from_utf8_lossy(&bytes), name).ok_or_else(no_digest)
}
