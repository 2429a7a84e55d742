//! `regionwall update` over HTTPS: a mirror whose certificate a private CA
//! signed (served by `openssl s_server` on loopback) is refused until the
//! policy's `[update] ca_file` names that CA, then fetched and switched to;
//! a `ca_file` that holds no certificate is refused with its path.

mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{data_dir, exe, text};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `openssl s_server -WWW` serving `www/` over TLS on a loopback port.
struct TlsMirror {
    child: Child,
    port: u16,
}

impl Drop for TlsMirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA, and a server certificate for 127.0.0.1 it signed (P-256, two days).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rw-update-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn serve(dir: &Path) -> TlsMirror {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("openssl")
        .current_dir(dir.join("www"))
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "../srv.pem", "-key", "../srv.key"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsMirror { child, port }
}

fn update(policy: &Path) -> Output {
    let out = Command::new(exe())
        .arg("update")
        .arg(policy)
        .args(["--no-reload", "--force"])
        .output()
        .expect("run update");
    println!("update:\n{}", text(&out));
    out
}

#[test]
fn https_mirror_behind_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("rwupd-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).expect("scratch");
    let scratch = Scratch(dir.clone());
    certificates(&dir);
    std::fs::copy(
        data_dir().join("rir/delegated-apnic-20141224"),
        dir.join("www/apnic.txt"),
    )
    .expect("the real APNIC file");
    let mirror = serve(&dir);
    let policy = dir.join("policy.toml");
    let write = |ca: &str| {
        std::fs::write(
            &policy,
            format!(
                "[update]\ndir = \"data\"\n{ca}[sources.apnic]\nformat = \"rir\"\npath = \"data/current/apnic.txt\"\nurl = \"https://127.0.0.1:{}/apnic.txt\"\n",
                mirror.port
            ),
        )
        .expect("policy");
    };

    // The built-in web roots do not know the private CA: refused, nothing kept.
    write("");
    let out = update(&policy);
    assert!(!out.status.success(), "an unknown issuer is refused");
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("data/current").exists(), "no version");

    // A ca_file without a certificate: refused, naming the file.
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").expect("pem");
    write("ca_file = \"empty.pem\"\n");
    let out = update(&policy);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("empty.pem") && text(&out).contains("expected PEM certificates"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("data/current").exists(), "no version");

    // Trusting the CA: fetched, verified and switched to, byte for byte.
    write("ca_file = \"ca.pem\"\n");
    let out = update(&policy);
    assert!(out.status.success(), "{}", text(&out));
    let got = std::fs::read(dir.join("data/current/apnic.txt")).expect("current");
    let sent = std::fs::read(dir.join("www/apnic.txt")).expect("served");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the file arrived whole");
    drop(mirror);
    drop(scratch);
}
