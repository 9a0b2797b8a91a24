//! Bounded fuzz runs of every decoder that reads outside input: runtime options (and their
//! TOML), `start`'s stdin (bootstrap params or an options Any), an exec's OCI process spec,
//! Update's resources, stdio URIs and the command line. Each gets random bytes and mutations
//! of a valid input; it must never panic, and what it refuses it refuses as InvalidArgument
//! (the command line as a usage error). Deterministic seeds; FUZZ_ITERATIONS raises the count
//! for a longer run (README, Tests).

use protobuf::well_known_types::any::Any;
use protobuf::Message;
use shim::error::Error;

/// xorshift64*: enough randomness for mutations, no crate, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `seed` changed a few times: bytes flipped, inserted, removed, a run repeated, or cut.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..=self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if at < out.len() => out[at] ^= 1 << self.below(8),
                1 => out.insert(at, self.next() as u8),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 => {
                    let end = (at + self.below(16)).min(out.len());
                    let run = out[at..end].to_vec();
                    out.splice(at..at, run);
                }
                4 => out.truncate(at),
                _ => {
                    // A byte that means something to the formats here.
                    let special = b"{}[]\":,=/?&%\\\0\n'#";
                    out.insert(at, special[self.below(special.len())]);
                }
            }
        }
        out
    }

    /// Random bytes half the time, a mutation of one of `seeds` otherwise.
    fn input(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        if self.below(2) == 0 {
            self.bytes(256)
        } else {
            let seed = &seeds[self.below(seeds.len())];
            self.mutate(seed)
        }
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn refused_as_invalid<T>(what: &str, input: &[u8], result: Result<T, Error>) -> usize {
    match result {
        Ok(_) => 0,
        Err(Error::InvalidArgument(_)) => 1,
        Err(other) => panic!("{what} refused {input:?} as {other:?}, want InvalidArgument"),
    }
}

/// The message names of the three option types containerd sends, plus nonsense.
const TYPE_URLS: &[&str] = &[
    "containerd.runc.v1.Options",
    "types.containerd.io/containerd.runc.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "runtimeoptions.v1.Options",
    "",
    "x",
    "google.protobuf.Empty",
];

fn option_seeds() -> Vec<Vec<u8>> {
    let runc = shim::protos::runc_options::Options {
        binary_name: "/usr/bin/runc".into(),
        root: "/run/containerd/runc".into(),
        systemd_cgroup: true,
        io_uid: 1000,
        criu_path: "/usr/sbin/criu".into(),
        ..Default::default()
    };
    let cri = shim::protos::runtimeoptions::Options {
        type_url: "containerd.runc.v1.Options".into(),
        config_body: "BinaryName = \"/usr/bin/runc\"\nSystemdCgroup = true\nIoUid = 7\n".into(),
        ..Default::default()
    };
    vec![
        runc.write_to_bytes().unwrap_or_default(),
        cri.write_to_bytes().unwrap_or_default(),
    ]
}

#[test]
fn runtime_options_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = option_seeds();
    let mut refused = 0;
    let n = iterations();
    for _ in 0..n {
        let value = rng.input(&seeds);
        let any = Any {
            type_url: TYPE_URLS[rng.below(TYPE_URLS.len())].into(),
            value,
            ..Default::default()
        };
        // A config_path would read a file of the host's; containerd's own config names it,
        // so the fuzz keeps to the body.
        if let Ok(o) = shim::protos::runtimeoptions::Options::parse_from_bytes(&any.value) {
            if !o.config_path.is_empty() {
                continue;
            }
        }
        refused += refused_as_invalid("options", &any.value, shim::options::decode(Some(&any)));
    }
    println!("runtime options: {n} inputs, {refused} refused");
}

#[test]
fn runtime_options_toml_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let seeds: Vec<Vec<u8>> = vec![
        b"BinaryName = \"/usr/bin/runc\"\nRoot = \"/run/x\"\nSystemdCgroup = true\n".to_vec(),
        b"[options]\nNoPivotRoot = true\nIoUid = 1000\nIoGid = 1000\nShimCgroup = \"/a\"\n"
            .to_vec(),
        b"CriuPath = \"/c\"\nCriuImagePath = \"/i\"\nCriuWorkPath = \"/w\"\nNoNewKeyring = 1\n"
            .to_vec(),
    ];
    let mut refused = 0;
    let n = iterations();
    for _ in 0..n {
        let body = String::from_utf8_lossy(&rng.input(&seeds)).into_owned();
        let options = shim::protos::runtimeoptions::Options {
            config_body: body,
            ..Default::default()
        };
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: options.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        };
        let body = options.config_body.as_bytes();
        refused += refused_as_invalid("TOML", body, shim::options::decode(Some(&any)));
    }
    println!("runtime options TOML: {n} inputs, {refused} refused");
}

#[test]
fn start_stdin_never_panics() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let flags = shim::cli::Flags {
        namespace: "ns".into(),
        id: "task".into(),
        ..Default::default()
    };
    let params = shim::protos::bootstrap::BootstrapParams {
        instance_id: "task".into(),
        namespace: "ns".into(),
        containerd_version: "2.3.0".into(),
        socket_dir: Some("/run/containerd/s".into()),
        ..Default::default()
    };
    let mut seeds = option_seeds();
    seeds.push(params.write_to_bytes().unwrap_or_default());
    let n = iterations();
    let mut bootstraps = 0;
    for _ in 0..n {
        let stdin = rng.input(&seeds);
        let handshake = shim::bootstrap::Handshake::read(&flags, stdin);
        if matches!(handshake, shim::bootstrap::Handshake::Bootstrap { .. }) {
            bootstraps += 1;
        }
        // Whatever was read, the reply for it is well formed.
        let reply = handshake.reply("unix:///run/containerd/s/abc");
        assert!(!reply.is_empty());
    }
    println!("start's stdin: {n} inputs, {bootstraps} read as bootstrap params");
}

#[test]
fn exec_specs_and_resources_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let specs: Vec<Vec<u8>> = vec![
        br#"{"args":["sh","-c","echo hi"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#
            .to_vec(),
        br#"{"terminal":true,"consoleSize":{"height":24,"width":80},"args":["sh"],"cwd":"/","user":{"uid":1,"gid":2,"additionalGids":[3]},"capabilities":{"bounding":["CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true}"#
            .to_vec(),
    ];
    let resources: Vec<Vec<u8>> = vec![
        br#"{"memory":{"limit":67108864,"swap":-1},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":50}}"#
            .to_vec(),
        br#"{"blockIO":{"weight":100},"hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#.to_vec(),
    ];
    let n = iterations();
    let (mut specs_refused, mut resources_refused) = (0, 0);
    for _ in 0..n {
        let spec = rng.input(&specs);
        specs_refused += refused_as_invalid(
            "exec spec",
            &spec,
            shim::container::prepare_exec_spec(&spec, rng.below(2) == 0),
        );
        let res = rng.input(&resources);
        resources_refused +=
            refused_as_invalid("resources", &res, shim::container::check_resources(&res));
    }
    println!(
        "exec specs: {n} inputs, {specs_refused} refused; resources: {n} inputs, {resources_refused} refused"
    );
}

#[test]
fn stdio_uris_never_panic() {
    let mut rng = Rng(0x5151_5151_abab_abab);
    let seeds: Vec<Vec<u8>> = vec![
        b"/run/containerd/fifo/1/c-stdout".to_vec(),
        b"fifo:///run/x/stderr".to_vec(),
        b"file:///var/log/c.log".to_vec(),
        b"binary:///usr/bin/logger?--dir=%2Ftmp&x=1&flag".to_vec(),
        b"binary-v2://host/usr/bin/l?a%20b=c%zz".to_vec(),
    ];
    let n = iterations();
    let mut refused = 0;
    for _ in 0..n {
        let mut text = || String::from_utf8_lossy(&rng.input(&seeds)).into_owned();
        let paths = shim::stdio::StdioPaths {
            stdin: text(),
            stdout: text(),
            stderr: text(),
            terminal: false,
        };
        let paths = shim::stdio::StdioPaths {
            terminal: rng.below(2) == 0,
            ..paths
        };
        let shown = format!("{paths:?}");
        refused += refused_as_invalid("stdio", shown.as_bytes(), shim::stdio::uri::parse(&paths));
    }
    println!("stdio URIs: {n} inputs, {refused} refused");
}

#[test]
fn command_lines_never_panic() {
    let mut rng = Rng(0x7777_0000_1234_8888);
    let words: &[&str] = &[
        "-namespace",
        "--namespace=k8s.io",
        "-id",
        "-address",
        "-publish-binary",
        "-bundle",
        "-socket",
        "-debug",
        "-debug=false",
        "-v",
        "-info",
        "start",
        "delete",
        "x",
        "-",
        "--",
        "=",
        "-id=",
    ];
    let n = iterations();
    let mut refused = 0;
    for _ in 0..n {
        let args: Vec<String> = (0..rng.below(8))
            .map(|_| {
                if rng.below(4) == 0 {
                    String::from_utf8_lossy(&rng.bytes(12)).into_owned()
                } else {
                    words[rng.below(words.len())].to_string()
                }
            })
            .collect();
        if shim::cli::parse(args).is_err() {
            refused += 1;
        }
    }
    println!("command lines: {n} inputs, {refused} refused");
}
