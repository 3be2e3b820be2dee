//! `tandem backup` and `tandem restore`: encrypted backups that stay in the
//! jurisdiction. A backup asks the running region for a consistent snapshot,
//! encrypts it with the operator's key and writes it through `object_store`
//! (local filesystem; S3-compatible stores with the `s3` feature), but only to
//! a destination declared for the region's jurisdiction, checked before
//! anything is read or written. A restore reads the file, verifies it
//! completely, and only then replaces the (stopped) region's store in one
//! transaction; the region then rejoins replication and converges.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use object_store::{ObjectStore, ObjectStoreExt};

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub region: String,
    /// Destination URL: `file:///dir/` (a name is chosen) or `file:///dir/name.tbk`.
    #[arg(long)]
    pub to: String,
    /// File holding the 32-byte key as 64 hex digits; else `TANDEM_BACKUP_KEY`.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The region's base URL, if not its configured address.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub connect: crate::connect::ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub region: String,
    /// The backup object's URL.
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Data directory instead of the config's `deployment.data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn key(file: Option<&PathBuf>) -> anyhow::Result<[u8; 32]> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading key file {}", f.display()))?,
        None => std::env::var("TANDEM_BACKUP_KEY")
            .context("no backup key: pass --key-file or set TANDEM_BACKUP_KEY (64 hex digits)")?,
    };
    let bytes = hex::decode(text.trim()).context("the backup key must be 64 hex digits")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("the backup key must be 32 bytes (64 hex digits)"))
}

fn object(url: &str) -> anyhow::Result<(Box<dyn ObjectStore>, object_store::path::Path)> {
    let parsed = url::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    object_store::parse_url(&parsed).with_context(|| {
        format!("unsupported destination `{url}` (file:/// URLs; s3:// with the s3 feature)")
    })
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let region = config
        .region(&args.region)
        .with_context(|| format!("region `{}` is not in the config", args.region))?;
    // Refused before anything is read or written.
    if let Err(why) = config.backup_permitted(&region.name, &args.to) {
        eprintln!("tandem: backup refused: {why}");
        return Ok(ExitCode::from(2));
    }
    let key = key(args.key_file.as_ref())?;
    let connection =
        crate::connect::Connection::open(&args.connect, &config, &config.deployment.data_dir)?;
    let base = args.url.clone().unwrap_or_else(|| connection.url(region.listen));
    let token = crate::node_cmd::admin_token(&config.deployment.data_dir)
        .context("no admin token: set TANDEM_ADMIN_TOKEN or keep <data_dir>/admin.token")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let snapshot_bytes = fetch_snapshot(&connection, &base, &token, &args.to).await?;
        let snapshot: tandem_store::Snapshot = tandem_store::decode("snapshot", &snapshot_bytes)?;
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
        let nonce: [u8; 12] =
            hex::decode(&crate::up::random_token()?[..24])?.try_into().expect("12 bytes");
        let file = tandem_node::backup::seal(&snapshot, &region.jurisdiction, created, &key, nonce);
        let target = if args.to.ends_with('/') {
            format!("{}{}-{created}.tbk", args.to, region.name)
        } else {
            args.to.clone()
        };
        let (store, path) = object(&target)?;
        store.put(&path, file.clone().into()).await.with_context(|| format!("writing {target}"))?;
        println!(
            "backup of {} written to {target}: {} records, {} bytes, encrypted",
            region.name,
            snapshot.records.len(),
            file.len()
        );
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn fetch_snapshot(
    connection: &crate::connect::Connection,
    base: &str,
    token: &str,
    destination: &str,
) -> anyhow::Result<Vec<u8>> {
    let dest: String = url::form_urlencoded::byte_serialize(destination.as_bytes()).collect();
    let url = format!("{base}/v1/admin/snapshot?destination={dest}");
    let (status, body) = crate::connect::admin_call(
        connection,
        hyper::Method::GET,
        &url,
        token,
        "asking for a snapshot",
    )
    .await?;
    if !status.is_success() {
        bail!("{base} refused the snapshot ({status}): {}", String::from_utf8_lossy(&body));
    }
    Ok(body.to_vec())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let region = config
        .region(&args.region)
        .with_context(|| format!("region `{}` is not in the config", args.region))?;
    let key = key(args.key_file.as_ref())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bytes = rt.block_on(async {
        let (store, path) = object(&args.from)?;
        let got = store.get(&path).await.with_context(|| format!("reading {}", args.from))?;
        anyhow::Ok(got.bytes().await?.to_vec())
    })?;
    // Verified completely before anything is replaced.
    let (header, snapshot) = match tandem_node::backup::open(&bytes, &key) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tandem: restore refused, nothing was changed: {}: {e}", args.from);
            return Ok(ExitCode::from(2));
        }
    };
    if header.region != region.name {
        eprintln!(
            "tandem: restore refused: {} is a backup of {}, not {}",
            args.from, header.region, region.name
        );
        return Ok(ExitCode::from(2));
    }
    if header.jurisdiction != region.jurisdiction {
        eprintln!(
            "tandem: restore refused: the backup belongs to {}, the region is in {}",
            header.jurisdiction, region.jurisdiction
        );
        return Ok(ExitCode::from(2));
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| config.deployment.data_dir.clone());
    let store = tandem_store::RedbStore::open(&data_dir, &region.name).with_context(|| {
        format!("opening {}'s store (stop the region before restoring)", region.name)
    })?;
    // The audit log must verify before anything is replaced: a restore is
    // never done without its entry.
    let audit = tandem_node::audit::AuditLog::open(
        &data_dir.join(&region.name),
        config.audit.segment_bytes,
    )
    .context("the region's audit log does not verify; nothing was restored")?;
    // New changes number above anything handed out before, so peers that saw
    // changes made after the backup still take the new ones.
    let floor =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    use tandem_store::Store;
    store.restore(&snapshot, floor.max(snapshot.last_seq + 1))?;
    audit
        .append(
            tandem_node::audit::Flow {
                kind: "restore",
                peer: "backup".into(),
                peer_jurisdiction: region.jurisdiction.clone(),
                records: [("*".to_string(), snapshot.records.len() as u64)].into_iter().collect(),
                detail: format!("from {} (created {} ms)", args.from, header.created_at_ms),
                ..Default::default()
            },
            floor / 1000,
        )
        .context("the store was restored but the restore could not be written to the audit log")?;
    println!(
        "restored {} from {}: {} records; start the region to rejoin replication",
        region.name,
        args.from,
        snapshot.records.len()
    );
    Ok(ExitCode::SUCCESS)
}
