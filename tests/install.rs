//! `./x install` staged into a temporary `--destdir`, as a packager runs
//! it: the unit passes `systemd-analyze verify` (binary executable, man
//! pages found), the man pages render, the completions name every
//! command, the example policy is installed only if absent, and the
//! unit keeps its hardening.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

const COMMANDS: [&str; 13] = [
    "run", "check", "explain", "demo", "events", "stats", "detach", "history", "update", "stage",
    "diff", "promote", "discard",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("parent")
        .to_path_buf()
}

/// `cargo xtask install --binary <the binary under test> ARGS...`.
fn install(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["run", "--quiet", "--package", "xtask", "--", "install"])
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_regionwall"))
        .args(args)
        .output()
        .expect("cargo xtask install");
    println!(
        "xtask install {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}", out.status);
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Removes the staging root on drop, pass or fail.
struct Stage(PathBuf);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn install_into_a_destdir_gives_a_unit_systemd_accepts() {
    let stage = Stage(std::env::temp_dir().join(format!("wtops-install-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&stage.0);
    let d = stage.0.to_str().expect("UTF-8").to_string();
    install(&["--destdir", &d]);
    let root = |p: &str| stage.0.join(p.trim_start_matches('/'));

    let bin = root("/usr/local/bin/regionwall");
    assert_eq!(mode(&bin), 0o755);
    let man1 = root("/usr/local/share/man/man1");
    let mut pages: Vec<String> = std::fs::read_dir(&man1)
        .expect("man1")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("regionwall-{c}.1"))
        .collect();
    expected.push("regionwall.1".into());
    expected.sort();
    assert_eq!(pages, expected, "regionwall(1) and one page per command");

    // The unit: the repository's, with the binary's final path and every
    // hardening line intact.
    let unit_path = root("/usr/local/lib/systemd/system/regionwall@.service");
    assert_eq!(mode(&unit_path), 0o644);
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let original = std::fs::read_to_string(repo().join("packaging/systemd/regionwall@.service"))
        .expect("unit");
    assert_eq!(
        unit, original,
        "installed under the default prefix unchanged"
    );
    for line in [
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "PrivateDevices=yes",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    let docs = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation="))
        .expect("Documentation=");
    for doc in docs.split_whitespace() {
        let page = doc
            .strip_prefix("man:")
            .and_then(|p| p.strip_suffix("(1)"))
            .unwrap_or_else(|| panic!("a man page: {doc}"));
        assert!(man1.join(format!("{page}.1")).exists(), "{doc} installed");
    }

    verify_unit(&stage.0, &unit, &bin, &root("/usr/local/share/man"));
    check_update_units(&stage.0, &bin, &root("/usr/local/share/man"));
    check_man_page(&man1.join("regionwall-run.1"));
    check_completions(&stage.0);

    // The example policy, then a second install: another prefix and unit
    // directory, the example left as the administrator edited it.
    let example = root("/etc/regionwall/example.toml");
    let text = std::fs::read_to_string(&example).expect("example policy");
    assert!(text.contains("regions_dir = \"/var/lib/regionwall/country-ip-blocks\""));
    std::fs::write(&example, "# edited\n").expect("edit");
    install(&[
        "--destdir",
        &d,
        "--prefix",
        "/opt/regionwall",
        "--unit-dir",
        "/etc/systemd/system",
    ]);
    assert_eq!(
        std::fs::read_to_string(&example).expect("example"),
        "# edited\n"
    );
    let unit =
        std::fs::read_to_string(root("/etc/systemd/system/regionwall@.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/regionwall/bin/regionwall run --iface %i"),
        "ExecStart names the prefix's binary"
    );
    assert_eq!(mode(&root("/opt/regionwall/bin/regionwall")), 0o755);
}

/// The daily update: the service and its timer installed beside the
/// controller's unit, unchanged, the timer daily with a randomized delay,
/// and both accepted by `systemd-analyze verify`.
fn check_update_units(stage: &Path, bin: &Path, man: &Path) {
    let dir = stage.join("usr/local/lib/systemd/system");
    for name in ["regionwall-update.service", "regionwall-update.timer"] {
        let installed = std::fs::read_to_string(dir.join(name)).expect("installed unit");
        let original =
            std::fs::read_to_string(repo().join("packaging/systemd").join(name)).expect("unit");
        assert_eq!(installed, original, "{name} installed unchanged");
        assert_eq!(mode(&dir.join(name)), 0o644);
    }
    let timer = std::fs::read_to_string(dir.join("regionwall-update.timer")).expect("timer");
    for line in [
        "OnCalendar=daily",
        "RandomizedDelaySec=4h",
        "Persistent=true",
    ] {
        assert!(timer.lines().any(|l| l == line), "{line}");
    }
    if !have("systemd-analyze") {
        println!("SKIPPED systemd-analyze verify of the update units");
        return;
    }
    let check_dir = stage.join("verify-update");
    std::fs::create_dir_all(&check_dir).expect("dir");
    for name in ["regionwall-update.service", "regionwall-update.timer"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("unit");
        std::fs::write(
            check_dir.join(name),
            text.replace("/usr/local/bin/regionwall", bin.to_str().expect("UTF-8")),
        )
        .expect("write");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(check_dir.join("regionwall-update.service"))
        .arg(check_dir.join("regionwall-update.timer"))
        .env("MANPATH", man)
        .current_dir(stage)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr);
    println!("systemd-analyze verify (update): {} {text}", out.status);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// `systemd-analyze verify` on the installed unit.
fn verify_unit(stage: &Path, unit: &str, bin: &Path, man: &Path) {
    // systemd-analyze checks the unit against this machine's root, where
    // ExecStart's /usr/local/bin/regionwall is not installed: verify a
    // copy whose paths point into the stage, with MANPATH at its man pages
    // (`--root=` would need a whole systemd tree there: sysinit.target,
    // /bin/kill).
    if have("systemd-analyze") {
        let check_dir = stage.join("verify");
        std::fs::create_dir_all(&check_dir).expect("dir");
        let check_unit = check_dir.join("regionwall@.service");
        std::fs::write(
            &check_unit,
            unit.replace("/usr/local/bin/regionwall", bin.to_str().expect("UTF-8")),
        )
        .expect("write");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&check_unit)
            .env("MANPATH", man)
            .current_dir(stage)
            .output()
            .expect("systemd-analyze");
        let text = String::from_utf8_lossy(&out.stderr);
        println!("systemd-analyze verify: {} {text}", out.status);
        assert!(out.status.success() && text.trim().is_empty(), "{text}");
        // Without the man pages the same check fails: it does look.
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&check_unit)
            .env("MANPATH", stage)
            .current_dir(stage)
            .output()
            .expect("systemd-analyze");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("man regionwall(1)"),
            "the man check ran"
        );
    } else {
        println!(
            "SKIPPED systemd-analyze verify: systemd-analyze is not installed (scripts/setup.sh installs it)"
        );
    }
}

/// The page renders (`man -l`), or at least starts with its roff header.
fn check_man_page(run_page: &Path) {
    // The man pages render.
    let header = std::fs::read_to_string(run_page).expect("page");
    assert!(header.contains(".TH regionwall-run 1"), "roff header");
    if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(run_page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man -l");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("man -l regionwall-run.1 (first lines):");
        for line in text.lines().take(6) {
            println!("  {line}");
        }
        assert!(out.status.success());
        assert!(text.contains("NAME") && text.contains("--iface"), "{text}");
        assert!(
            text.contains("--no-wait"),
            "generated from the real options"
        );
    } else {
        println!("man is not installed; checked the roff header only");
    }
}

/// Every shell's script completes every command and the options.
fn check_completions(stage: &Path) {
    let root = |p: &str| stage.join(p.trim_start_matches('/'));
    // Completions name every command.
    for (shell, path) in [
        (
            "bash",
            "/usr/local/share/bash-completion/completions/regionwall",
        ),
        ("zsh", "/usr/local/share/zsh/site-functions/_regionwall"),
        (
            "fish",
            "/usr/local/share/fish/vendor_completions.d/regionwall.fish",
        ),
    ] {
        let text = std::fs::read_to_string(root(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        for command in COMMANDS {
            assert!(text.contains(command), "{shell} completes {command}");
        }
        assert!(text.contains("iface"), "{shell} completes options");
    }
}
