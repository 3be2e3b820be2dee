//! How to start a deployment: the config it starts from, how its processes
//! run (`tandem up` with or without the router, or separate nodes), the
//! options a test needs (clock skew, a lying region, captures, custom config
//! text, environment), and the time limits of its waits. `start` writes the
//! config with free ports into a fresh directory, starts the processes and
//! returns once every region is healthy and the router (if any) routes to
//! every region.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use tandem_config::Config;

use super::direct::DirectRunner;
use super::up::{UpArgs, UpRunner};
use super::{Deployment, Limits, Runner, Settings};
use crate::http::{Client, Method};
use crate::process::Tandem;

/// The start of a deployment's config.
#[derive(Debug, Clone)]
enum Base {
    /// TOML text (the example, or an edited copy of it).
    Text(String),
    Config(Box<Config>),
}

/// How to run a deployment; [`Builder::start`] runs it.
#[derive(Debug, Clone)]
pub struct Builder {
    prefix: String,
    base: Base,
    extra_toml: String,
    direct: bool,
    up: UpArgs,
    capture: bool,
    backups: bool,
    latency_ms: Vec<(String, String, u64)>,
    clock_skew_ms: BTreeMap<String, i64>,
    settings: Settings,
    start_attempts: u32,
    /// Leave the API keys file to `tandem up` (the kit's key is not in it).
    keys_from_up: bool,
}

impl Tandem {
    /// A deployment of the example config under `tandem up` with the router.
    pub fn deployment(self) -> Builder {
        Builder {
            prefix: "tandem-".into(),
            base: Base::Text(crate::config::example_text().to_owned()),
            extra_toml: String::new(),
            direct: false,
            up: UpArgs { router: true, ..UpArgs::default() },
            capture: false,
            backups: false,
            latency_ms: Vec::new(),
            clock_skew_ms: BTreeMap::new(),
            settings: Settings {
                bin: self,
                admin_token: "test-admin-token".into(),
                replication_secret: Some("test-replication-secret".into()),
                env: Vec::new(),
                limits: Limits::default(),
                log_tail_lines: 120,
                insecure: false,
            },
            start_attempts: 1,
            keys_from_up: false,
        }
    }
}

impl Builder {
    /// The prefix of the temporary directory (names the test in `ps`).
    pub fn prefix(mut self, prefix: &str) -> Builder {
        self.prefix = prefix.to_owned();
        self
    }

    /// Start from this TOML text instead of the example (an edited copy of
    /// it, e.g. a shorter budget).
    pub fn config_text(mut self, text: &str) -> Builder {
        self.base = Base::Text(text.to_owned());
        self
    }

    /// Start from this config instead of the example.
    pub fn config(mut self, config: Config) -> Builder {
        self.base = Base::Config(Box::new(config));
        self
    }

    /// TOML appended to the config (e.g. `[[transfers]]` tables).
    pub fn extra_toml(mut self, text: &str) -> Builder {
        self.extra_toml.push('\n');
        self.extra_toml.push_str(text);
        self
    }

    /// `tandem up --no-router`.
    pub fn without_router(mut self) -> Builder {
        self.up.router = false;
        self
    }

    /// Separate `tandem node` processes behind link proxies of the kit, no
    /// router (for per-node flags).
    pub fn separate_nodes(mut self) -> Builder {
        self.direct = true;
        self.up.router = false;
        self
    }

    /// A region's clock runs `ms` off (negative: behind).
    pub fn clock_skew(mut self, region: &str, ms: i64) -> Builder {
        self.clock_skew_ms.insert(region.to_owned(), ms);
        self
    }

    /// The one-way latency of the link between `a` and `b` (under `tandem up`).
    pub fn latency(mut self, a: &str, b: &str, ms: u64) -> Builder {
        self.latency_ms.push((a.to_owned(), b.to_owned(), ms));
        self
    }

    /// `--unsafe-ack-region R`: R acknowledges writes before it commits them.
    pub fn lying_region(mut self, region: &str) -> Builder {
        self.up.unsafe_ack_region = Some(region.to_owned());
        self
    }

    /// `--capture-dir`: every byte of each simulated link is recorded.
    pub fn capture(mut self) -> Builder {
        self.capture = true;
        self
    }

    /// Each jurisdiction's backup destination is `<root>/backups/<j>/`.
    pub fn backup_dirs(mut self) -> Builder {
        self.backups = true;
        self
    }

    /// More arguments of `tandem up`.
    pub fn up_args(mut self, args: &[&str]) -> Builder {
        self.up.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An environment variable of every process (and of [`Deployment::cli`]).
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.settings.env.push((key.to_owned(), Some(value.to_owned())));
        self
    }

    /// A variable every process must not inherit.
    pub fn env_remove(mut self, key: &str) -> Builder {
        self.settings.env.push((key.to_owned(), None));
        self
    }

    /// `TANDEM_ADMIN_TOKEN`.
    pub fn admin_token(mut self, token: &str) -> Builder {
        self.settings.admin_token = token.to_owned();
        self
    }

    /// `TANDEM_REPLICATION_SECRET`; `None` leaves the variable as it is.
    pub fn replication_secret(mut self, secret: Option<&str>) -> Builder {
        self.settings.replication_secret = secret.map(str::to_owned);
        self
    }

    /// Let `tandem up` create the API keys file: the kit's clients then hold
    /// no valid key (read the one `up` made from `<data_dir>/api-keys`).
    pub fn keys_from_up(mut self) -> Builder {
        self.keys_from_up = true;
        self
    }

    /// `--insecure`: plaintext and no authentication (for tests of the
    /// wire itself).
    pub fn insecure(mut self) -> Builder {
        self.settings.insecure = true;
        self
    }

    /// The time limits (start from `Limits::default()`).
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.settings.limits = limits;
        self
    }

    pub fn log_tail_lines(mut self, n: usize) -> Builder {
        self.settings.log_tail_lines = n;
        self
    }

    /// Try a `tandem up` that exits before it is up this many times, each on
    /// fresh ports (a released port can be taken by another process before
    /// `up` binds it).
    pub fn start_attempts(mut self, n: u32) -> Builder {
        self.start_attempts = n.max(1);
        self
    }

    /// Write the config into a fresh directory and start the deployment.
    pub fn start(self) -> Deployment {
        let mut last = String::new();
        for _ in 0..self.start_attempts {
            match self.try_start() {
                Ok(d) => return d,
                Err(why) => last = why,
            }
        }
        panic!("{last}");
    }

    fn try_start(&self) -> Result<Deployment, String> {
        let dir =
            tempfile::Builder::new().prefix(&self.prefix).tempdir().expect("a temporary directory");
        let root = dir.path().canonicalize().expect("a canonical temporary directory");
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        let config = self.build_config(&root, &data_dir);
        let config_path = root.join("tandem.toml");
        std::fs::write(&config_path, crate::config::to_text(&config)).expect("write the config");
        let capture_dir = self.capture.then(|| root.join("capture"));
        if !self.settings.insecure {
            // `tandem up` keeps an API keys file it finds; separate nodes
            // also need the certificates `up` would make.
            if !self.keys_from_up || self.direct {
                crate::tls::write_api_keys(&data_dir.join("api-keys"));
            }
            if self.direct {
                crate::tls::init_certs(&self.settings.bin, &config_path, &data_dir.join("certs"));
            }
        }
        let runner = if self.direct {
            let s = &self.settings;
            let skews = &self.clock_skew_ms;
            Runner::Direct(DirectRunner::start(s, &config, &config_path, &data_dir, skews, &root))
        } else {
            let mut up = self.up.clone();
            up.capture_dir.clone_from(&capture_dir);
            up.clock_skew_ms = self.clock_skew_ms.clone().into_iter().collect();
            Runner::Up(UpRunner::start(&self.settings, &up, &config_path, &data_dir, &root)?)
        };
        let limits = self.settings.limits;
        let (http, anonymous_http, router_http) = if self.settings.insecure {
            // Admin calls still want the admin token without TLS.
            let admin = format!("Bearer {}", self.settings.admin_token);
            let plain = match limits.connect {
                Some(c) => Client::with_connect_timeout(limits.request, c),
                None => Client::new(limits.request),
            };
            (Client::plain_with_auth(limits.request, limits.connect, &admin), plain.clone(), plain)
        } else {
            let certs = data_dir.join("certs");
            let auth = format!("Bearer {}", crate::tls::API_KEY);
            let as_holder = |holder: Option<&str>, auth: Option<&str>| {
                let tls = crate::tls::client_config(&certs, holder);
                Client::tls(limits.request, limits.connect, tls, auth)
            };
            (
                as_holder(Some("operator"), Some(&auth)),
                as_holder(None, None),
                as_holder(Some("router"), None),
            )
        };
        let scheme = self.settings.scheme();
        let d = Deployment {
            _dir: dir,
            root,
            regions: config
                .regions
                .iter()
                .map(|r| (r.name.clone(), format!("{scheme}://{}", r.listen)))
                .collect(),
            router: self.up.router.then(|| format!("{scheme}://{}", config.router.listen)),
            config,
            config_path,
            data_dir,
            capture_dir,
            runner,
            control_http: Client::plain_with_auth(
                limits.control,
                None,
                &format!("Bearer {}", self.settings.admin_token),
            ),
            http,
            anonymous_http,
            router_http,
            settings: self.settings.clone(),
            cli_runs: AtomicU32::new(0),
            started: Instant::now(),
        };
        d.check_started();
        Ok(d)
    }

    /// The config: the base plus the extra text, on free ports, with the
    /// latencies and backup destinations asked for.
    fn build_config(&self, root: &Path, data_dir: &Path) -> Config {
        let mut text = match &self.base {
            Base::Text(t) => t.clone(),
            Base::Config(c) => crate::config::to_text(c),
        };
        text.push_str(&self.extra_toml);
        let mut config = crate::config::on_free_ports(crate::config::parse(&text), data_dir);
        for (a, b, ms) in &self.latency_ms {
            crate::config::set_latency(&mut config, a, b, *ms);
        }
        if self.backups {
            for (name, j) in &mut config.jurisdictions {
                let dir: PathBuf = root.join("backups").join(name.to_lowercase());
                std::fs::create_dir_all(&dir).expect("create a backup directory");
                j.backup_destinations = vec![format!("file://{}/", dir.display())];
            }
        }
        config.validate().unwrap_or_else(|e| panic!("the test deployment is not valid: {e}"));
        config
    }
}

impl Deployment {
    /// Every address answers as this deployment's process (and not some
    /// other process that happened to hold the port), and the router, which
    /// routes nowhere before its first probe of a region, sees every region up.
    fn check_started(&self) {
        for name in self.region_names() {
            self.wait_healthy(name);
            let a = self.call(Method::GET, &format!("{}/healthz", self.url(name)), None, &[]);
            assert_eq!(
                a.body["region"],
                name,
                "{} is not {name}: {a}\n{}",
                self.url(name),
                self.logs()
            );
        }
        let Some(router) = &self.router else { return };
        let a = self.call(Method::GET, &format!("{router}/healthz"), None, &[]);
        assert_eq!(a.body["role"], "router", "{router} is not our router: {a}\n{}", self.logs());
        let timeout = self.settings.limits.start;
        assert!(
            self.wait_until(timeout, || self.router_sees_every_region()),
            "the router never saw every region up within {timeout:?}\n{}",
            self.logs()
        );
    }
}

/// The environment of a process of the deployment.
pub(crate) fn apply_env(cmd: &mut Command, s: &Settings) {
    cmd.env("TANDEM_ADMIN_TOKEN", &s.admin_token);
    if let Some(secret) = &s.replication_secret {
        cmd.env("TANDEM_REPLICATION_SECRET", secret);
    }
    for (k, v) in &s.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}
