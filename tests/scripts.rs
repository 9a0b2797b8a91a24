//! The download steps' choice of archive: `scripts/apt-source.sh` reads the machine's own apt
//! configuration, here fixture files written by the test.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Sources(PathBuf);

impl Sources {
    fn new(name: &str) -> Sources {
        let dir = std::env::temp_dir().join(format!("apt-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sources.list.d")).unwrap();
        Sources(dir)
    }

    fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(file), text).unwrap();
        self
    }

    /// The script's stdout, or its stderr when it fails.
    fn pick(&self) -> Result<String, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/apt-source.sh");
        let out = Command::new(script)
            .env("APT_SOURCES_LIST", self.0.join("sources.list"))
            .env("APT_SOURCES_PARTS", self.0.join("sources.list.d"))
            .env("APT_CODENAME", "bookworm")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_deb822_mirror_is_the_archive_used() {
    let s = Sources::new("deb822");
    s.write(
        "sources.list.d/debian.sources",
        "# security first: not the release's own suite\n\
         Types: deb\nURIs: http://security.example/debian-security\n\
         Suites: bookworm-security\nComponents: main\n\n\
         Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n\
         Enabled: no\nTypes: deb\nURIs: http://disabled.example/debian\n\
         Suites: bookworm\nComponents: main\n\n\
         Types: deb\nURIs: http://mirror.example/debian http://second.example/debian\n\
         Suites: bookworm bookworm-updates\nComponents: main contrib\n\
         Signed-By: /etc/apt/keyrings/mirror.gpg\n",
    );
    assert_eq!(
        s.pick().as_deref(),
        Ok("http://mirror.example/debian /etc/apt/keyrings/mirror.gpg")
    );
}

#[test]
fn a_one_line_source_with_options_is_the_archive_used() {
    let s = Sources::new("oneline");
    s.write(
        "sources.list",
        "# comment\ndeb http://proxy.example:3142/debian bookworm contrib\n\
         deb [arch=amd64 signed-by=/k.gpg] http://proxy.example:3142/debian bookworm main\n",
    );
    assert_eq!(
        s.pick().as_deref(),
        Ok("http://proxy.example:3142/debian /k.gpg")
    );
    let s = Sources::new("nokey");
    s.write(
        "sources.list",
        "deb http://m.example/debian bookworm main\n",
    );
    assert_eq!(
        s.pick().as_deref(),
        Ok("http://m.example/debian /usr/share/keyrings/debian-archive-keyring.gpg"),
        "Debian's own keyring when the source names none"
    );
}

#[test]
fn no_usable_source_is_a_clear_error() {
    let s = Sources::new("none");
    s.write(
        "sources.list.d/other.sources",
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\
         Components: main\n",
    );
    let err = s.pick().expect_err("no Debian source, no archive");
    assert!(
        err.contains("bookworm") && err.contains("main"),
        "the error names what is missing: {err}"
    );
}
