//! `tandem certs init|issue|revoke`: the deployment's certificate authority
//! and the certificates of its processes (DESIGN.md, Security), under
//! `<data_dir>/certs/`:
//!
//! - `ca.pem` and `ca.key`: the CA (ECDSA P-256, ten years);
//! - `<region>.pem`/`.key` for each region: it names the region and its
//!   jurisdiction (URI SANs, see `tandem_http::identity`), serves as
//!   `<region>.region.tandem`, `localhost` and its listen address;
//! - `router.pem`/`.key`: serves as `router.tandem`, `localhost` and its
//!   listen address, and proves the router to the nodes;
//! - `operator.pem`/`.key`: a client certificate for operator tools;
//! - `crl.pem`: the CA's revocation list (empty at first), checked on every
//!   handshake; `revoke` adds a certificate to it.
//!
//! Keys are written mode 0600, every file through a temporary file and a
//! rename. Leaf certificates are valid for `--days` (365 by default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use tandem_config::Config;
use tandem_http::identity;
use time::{Duration, OffsetDateTime};

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the CA and a certificate for every region, the router and the operator.
    Init(InitArgs),
    /// Create one more certificate (a region added later, or a replacement).
    Issue(IssueArgs),
    /// Revoke a certificate: it is refused at the next handshake everywhere
    /// (after the processes reload: SIGHUP, or within a second of the change).
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The certificates directory (default `<data_dir>/certs`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How long the certificates are valid, in days.
    #[arg(long, default_value_t = DAYS_DEFAULT)]
    pub days: u32,
}

#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The region to issue for (it must be in the config).
    #[arg(long, conflicts_with_all = ["router", "operator"])]
    pub region: Option<String>,
    #[arg(long)]
    pub router: bool,
    #[arg(long)]
    pub operator: bool,
    #[arg(long, default_value_t = DAYS_DEFAULT)]
    pub days: u32,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Whose certificate: a region, `router` or `operator` (its current `<name>.pem`).
    #[arg(long)]
    pub name: String,
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Init(a) => {
            let config = crate::config_cmd::load_or_example(a.config.as_deref())?;
            let dir = a.dir.unwrap_or_else(|| certs_dir(&config.deployment.data_dir));
            init(&config, &dir, a.days)?;
            println!(
                "certificates for deployment `{}` written to {}",
                config.deployment.name,
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Issue(a) => {
            let config = crate::config_cmd::load_or_example(a.config.as_deref())?;
            let dir = a.dir.unwrap_or_else(|| certs_dir(&config.deployment.data_dir));
            let holder = match (a.region, a.router, a.operator) {
                (Some(r), false, false) => {
                    let region = config
                        .region(&r)
                        .with_context(|| format!("region `{r}` is not in the config"))?;
                    Holder::region(region)
                }
                (None, true, false) => Holder::router(&config),
                (None, false, true) => Holder::operator(),
                _ => bail!("name exactly one of --region R, --router, --operator"),
            };
            let ca = Ca::load(&dir)?;
            issue(&ca, &holder, &dir, a.days)?;
            println!("issued {} in {}", holder.name, dir.display());
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Revoke(a) => {
            let config = crate::config_cmd::load_or_example(a.config.as_deref())?;
            let dir = a.dir.unwrap_or_else(|| certs_dir(&config.deployment.data_dir));
            let serial = revoke(&dir, &a.name)?;
            println!(
                "revoked {} (serial {}); processes pick it up on SIGHUP or within a second",
                a.name,
                hex::encode(serial)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long leaf certificates are valid unless `--days` says otherwise.
pub const DAYS_DEFAULT: u32 = 365;

/// The certificates directory of a deployment.
pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

/// Whether `dir` holds no certificates yet (then `tandem up` runs `init`).
pub fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Who a certificate is for and what it says.
pub struct Holder {
    pub name: String,
    uris: Vec<String>,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    server: bool,
}

impl Holder {
    pub fn region(r: &tandem_config::RegionConfig) -> Holder {
        Holder {
            name: r.name.clone(),
            uris: vec![identity::region_uri(&r.name), identity::jurisdiction_uri(&r.jurisdiction)],
            dns: vec![identity::region_server_name(&r.name), "localhost".into()],
            ips: vec![r.listen.ip()],
            server: true,
        }
    }

    pub fn router(config: &Config) -> Holder {
        Holder {
            name: "router".into(),
            uris: vec![identity::ROUTER_URI.into()],
            dns: vec![identity::ROUTER_SERVER_NAME.into(), "localhost".into()],
            ips: vec![config.router.listen.ip()],
            server: true,
        }
    }

    pub fn operator() -> Holder {
        Holder {
            name: "operator".into(),
            uris: vec![identity::OPERATOR_URI.into()],
            dns: Vec::new(),
            ips: Vec::new(),
            server: false,
        }
    }

    fn params(&self, days: u32) -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, self.name.clone());
        p.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(i64::from(days.max(1)));
        for u in &self.uris {
            p.subject_alt_names.push(SanType::URI(u.as_str().try_into()?));
        }
        for d in &self.dns {
            p.subject_alt_names.push(SanType::DnsName(d.as_str().try_into()?));
        }
        let mut ips = self.ips.clone();
        ips.sort();
        ips.dedup();
        for ip in ips.into_iter().filter(|ip| !ip.is_unspecified()) {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if self.server {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        Ok(p)
    }
}

/// Every holder of a deployment: its regions, the router, the operator.
pub fn holders(config: &Config) -> Vec<Holder> {
    let mut out: Vec<Holder> = config.regions.iter().map(Holder::region).collect();
    out.push(Holder::router(config));
    out.push(Holder::operator());
    out
}

/// The CA, loaded to sign with.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn load(dir: &Path) -> anyhow::Result<Ca> {
        let cert = std::fs::read_to_string(dir.join("ca.pem")).with_context(|| {
            format!("no CA in {} (run `tandem certs init` first)", dir.display())
        })?;
        let key = std::fs::read_to_string(dir.join("ca.key"))
            .with_context(|| format!("no CA key in {}", dir.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key)?)?;
        Ok(Ca { issuer })
    }
}

/// Create the CA, an empty revocation list and every holder's certificate.
pub fn init(config: &Config, dir: &Path, days: u32) -> anyhow::Result<()> {
    if dir.join("ca.pem").exists() {
        bail!(
            "{} already holds a CA; use `tandem certs issue` for one more certificate",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, format!("tandem {} CA", config.deployment.name));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(random_serial()?);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(3650);
    let cert = p.self_signed(&key)?;
    write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), true)?;
    write_file(&dir.join("ca.pem"), cert.pem().as_bytes(), false)?;
    let ca = Ca { issuer: Issuer::new(p, key) };
    write_crl(&ca, dir, &[])?;
    for h in holders(config) {
        issue(&ca, &h, dir, days)?;
    }
    Ok(())
}

/// Create (or replace) one holder's key and certificate.
pub fn issue(ca: &Ca, holder: &Holder, dir: &Path, days: u32) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let cert = holder.params(days)?.signed_by(&key, &ca.issuer)?;
    write_file(&dir.join(format!("{}.key", holder.name)), key.serialize_pem().as_bytes(), true)?;
    write_file(&dir.join(format!("{}.pem", holder.name)), cert.pem().as_bytes(), false)?;
    Ok(())
}

/// Add `name`'s current certificate to the revocation list; its serial.
pub fn revoke(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(format!("{name}.pem"));
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let cert = block.parse_x509().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let serial = cert.raw_serial().to_vec();
    let mut revoked = revoked_serials(dir)?;
    if !revoked.contains(&serial) {
        revoked.push(serial.clone());
    }
    write_crl(&Ca::load(dir)?, dir, &revoked)?;
    Ok(serial)
}

/// The serial numbers the current revocation list holds.
fn revoked_serials(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(dir.join("crl.pem")).context("reading crl.pem")?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("crl.pem: {e}"))?;
    use x509_parser::prelude::FromDer as _;
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&block.contents)
            .map_err(|e| anyhow::anyhow!("crl.pem: {e}"))?;
    Ok(crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect())
}

fn write_crl(ca: &Ca, dir: &Path, revoked: &[Vec<u8>]) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(3650),
        crl_number: SerialNumber::from(now.unix_timestamp() as u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)?;
    write_file(&dir.join("crl.pem"), crl.pem()?.as_bytes(), false)
}

/// 16 random bytes, positive as a DER integer.
fn random_serial() -> anyhow::Result<SerialNumber> {
    use rand::TryRng;
    let mut b = [0u8; 16];
    rand::rngs::SysRng.try_fill_bytes(&mut b)?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(SerialNumber::from_slice(&b))
}

/// Write through a temporary file and a rename; `secret`: mode 0600.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
