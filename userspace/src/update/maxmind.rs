//! MaxMind's update protocol as geoipupdate speaks it: a metadata call
//! (`/geoip/updates/metadata?edition_id=…`, with the md5 of the copy we
//! have) answers the latest md5 and date; only when the md5 differs is
//! `/geoip/databases/<edition>/download?date=…&suffix=tar.gz` fetched,
//! and the `.mmdb` inside must have that md5. HTTP basic authentication
//! with the account id and license key on both.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    UpdateError,
    fetch::{Client, Got, Validators, md5_hex},
};

/// The credentials and edition of one MaxMind source.
pub struct Edition<'a> {
    pub endpoint: &'a str,
    pub edition: &'a str,
    pub account_id: &'a str,
    pub license_key_file: &'a Path,
}

#[derive(Deserialize)]
struct Metadata {
    databases: Vec<Database>,
}

#[derive(Deserialize)]
struct Database {
    edition_id: String,
    md5: String,
    date: String,
}

/// What the server said.
pub enum Outcome {
    /// Our copy has the latest md5.
    Unchanged { md5: String },
    /// A new database (the `.mmdb` bytes) with its md5.
    New { mmdb: Vec<u8>, md5: String },
}

/// Asks for `e`; `current` is the copy we have, if any.
pub async fn update(
    client: &Client,
    e: &Edition<'_>,
    current: Option<&[u8]>,
    max_size: u64,
) -> Result<Outcome, UpdateError> {
    let key = read_key(e.license_key_file)?;
    let auth = Some((e.account_id, key.as_str()));
    let have = current.map_or_else(|| "0".repeat(32), md5_hex);
    let url = format!(
        "{}/geoip/updates/metadata?edition_id={}&db_md5={have}",
        e.endpoint, e.edition
    );
    let Got::Body { bytes, .. } = client.get(&url, &Validators::default(), auth).await? else {
        return Err(UpdateError::Protocol {
            url,
            why: "metadata answered 304".into(),
        });
    };
    let meta: Metadata = serde_json::from_slice(&bytes).map_err(|err| UpdateError::Protocol {
        url: url.clone(),
        why: format!("metadata is not the expected JSON: {err}"),
    })?;
    let db = meta
        .databases
        .into_iter()
        .find(|d| d.edition_id == e.edition)
        .ok_or_else(|| UpdateError::Protocol {
            url: url.clone(),
            why: format!("metadata does not list edition {}", e.edition),
        })?;
    let md5 = db.md5.to_ascii_lowercase();
    if md5 == have {
        return Ok(Outcome::Unchanged { md5 });
    }
    let date: String = db.date.chars().filter(char::is_ascii_digit).collect();
    let url = format!(
        "{}/geoip/databases/{}/download?date={date}&suffix=tar.gz",
        e.endpoint, e.edition
    );
    let Got::Body { bytes, .. } = client.get(&url, &Validators::default(), auth).await? else {
        return Err(UpdateError::Protocol {
            url,
            why: "download answered 304".into(),
        });
    };
    let name = format!("{}.mmdb", e.edition);
    let mmdb =
        super::archive::one_file(&bytes, &name, max_size).map_err(|why| UpdateError::Protocol {
            url: url.clone(),
            why,
        })?;
    let got = md5_hex(&mmdb);
    if got != md5 {
        return Err(UpdateError::Checksum {
            url,
            expected: md5,
            got,
        });
    }
    Ok(Outcome::New { mmdb, md5 })
}

fn read_key(path: &Path) -> Result<String, UpdateError> {
    let bytes = crate::input::read(
        path,
        crate::input::Limits {
            max_file_size: 4096,
        },
    )
    .map_err(|e| UpdateError::Key {
        path: PathBuf::from(path),
        why: e.to_string(),
    })?;
    let key = String::from_utf8_lossy(&bytes).trim().to_string();
    if key.is_empty() {
        return Err(UpdateError::Key {
            path: path.to_path_buf(),
            why: "it is empty".into(),
        });
    }
    Ok(key)
}
