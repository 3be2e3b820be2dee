//! `tandem status`: one screen for an operator. For each region: health,
//! drain state at the router, lag per data class against its budget (breaches
//! marked), replication queue depth, conflict rate and invariant violations;
//! and its storage: log entries after compaction, log position, store size,
//! free space, a full disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the collected data as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: crate::connect::ConnectArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let connection =
        crate::connect::Connection::open(&args.connect, &config, &config.deployment.data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(collect(&config, &connection));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&config, &report, color()));
    }
    let all_up = report["regions"].as_object().is_some_and(|m| m.values().all(|r| r["up"] == true));
    Ok(if all_up { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

type Client = tandem_http::client::HttpClient<http_body_util::Empty<bytes::Bytes>>;

async fn get_json(client: &Client, url: &str) -> Option<Value> {
    let uri: hyper::Uri = url.parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await.ok()?.ok()?;
    use http_body_util::BodyExt;
    let body =
        http_body_util::Limited::new(resp.into_body(), 16 << 20).collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

async fn get_text(client: &Client, url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await.ok()?.ok()?;
    use http_body_util::BodyExt;
    let body =
        http_body_util::Limited::new(resp.into_body(), 16 << 20).collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// Sum of a counter family's samples in Prometheus text.
pub fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(family) && matches!(l.as_bytes().get(family.len()), Some(b'{' | b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty f64 sum is -0.0
}

async fn collect(config: &tandem_config::Config, connection: &crate::connect::Connection) -> Value {
    let client: Client = connection.client(crate::connect::limits(Duration::from_secs(2)));
    let router_url = connection.url(config.router.listen);
    let routes = get_json(&client, &format!("{router_url}/v1/routes")).await;
    let mut regions = serde_json::Map::new();
    for r in &config.regions {
        let base = connection.url(r.listen);
        let status = get_json(&client, &format!("{base}/v1/status")).await;
        let metrics = get_text(&client, &format!("{base}/metrics")).await.unwrap_or_default();
        let drained = routes.as_ref().and_then(|rt| {
            rt["regions"]
                .as_array()?
                .iter()
                .find(|x| x["region"] == r.name.as_str())
                .map(|x| x["drained"].clone())
        });
        let router_up = routes.as_ref().and_then(|rt| {
            rt["regions"]
                .as_array()?
                .iter()
                .find(|x| x["region"] == r.name.as_str())
                .map(|x| x["up"].clone())
        });
        let writes = metric_sum(&metrics, "replication_writes_total");
        let conflicts = metric_sum(&metrics, "replication_conflicts_total");
        regions.insert(
            r.name.clone(),
            serde_json::json!({
                "url": base,
                "jurisdiction": r.jurisdiction,
                "up": status.is_some(),
                "router_up": router_up,
                "drained": drained,
                "isolated": status.as_ref().map(|s| s["isolated"].clone()),
                "budgets": status.as_ref().map(|s| s["budgets"].clone()),
                "peers": status.as_ref().map(|s| s["peers"].clone()),
                "writes": writes,
                "conflicts": conflicts,
                "conflict_rate": if writes > 0.0 { conflicts / writes } else { 0.0 },
                "invariant_violations": metric_sum(&metrics, "replication_invariant_violations_total"),
                "log": status.as_ref().map(|s| s["log"].clone()),
                "storage": status.as_ref().map(|s| s["storage"].clone()),
            }),
        );
    }
    serde_json::json!({ "router": { "url": router_url, "up": routes.is_some() }, "regions": regions })
}

fn render(config: &tandem_config::Config, report: &Value, color: bool) -> String {
    let (red, green, yellow, reset) =
        if color { ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m") } else { ("", "", "", "") };
    let mut out = String::new();
    let router_up = report["router"]["up"] == true;
    out.push_str(&format!(
        "deployment {}   router {} {}\n\n",
        config.deployment.name,
        report["router"]["url"].as_str().unwrap_or(""),
        if router_up { format!("{green}up{reset}") } else { format!("{red}DOWN{reset}") }
    ));
    out.push_str(&format!(
        "{:<12} {:<4} {:<6} {:<8} {:<9} {:>9} {:>10} {:>10}\n",
        "REGION", "JUR", "HEALTH", "ROUTING", "ISOLATED", "QUEUE", "CONFLICT%", "VIOLATIONS"
    ));
    let regions = report["regions"].as_object().cloned().unwrap_or_default();
    for (name, r) in &regions {
        let health = if r["up"] == true {
            format!("{green}up{reset}    ")
        } else {
            format!("{red}DOWN{reset}  ")
        };
        let routing = match (r["drained"].as_bool(), r["router_up"].as_bool()) {
            (Some(true), _) => format!("{yellow}drained{reset} "),
            (_, Some(false)) => format!("{red}routed-around{reset}"),
            (Some(false), _) => "serving ".to_string(),
            _ => "?       ".to_string(),
        };
        let queue: u64 = r["peers"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["queue_depth"].as_u64()).sum())
            .unwrap_or(0);
        let violations = r["invariant_violations"].as_f64().unwrap_or(0.0);
        let v = if violations > 0.0 {
            format!("{red}{violations:>10}{reset}")
        } else {
            format!("{violations:>10}")
        };
        out.push_str(&format!(
            "{:<12} {:<4} {} {} {:<9} {:>9} {:>9.3}% {}\n",
            name,
            r["jurisdiction"].as_str().unwrap_or(""),
            health,
            routing,
            r["isolated"].as_bool().map(|b| if b { "yes" } else { "no" }).unwrap_or("?"),
            queue,
            r["conflict_rate"].as_f64().unwrap_or(0.0) * 100.0,
            v
        ));
    }
    out.push_str("\nLAG vs BUDGET (worst peer, seconds)\n");
    out.push_str(&format!("{:<14}", "CLASS"));
    for name in regions.keys() {
        out.push_str(&format!(" {name:>16}"));
    }
    out.push_str("   BUDGET  ACTION\n");
    let mut classes: BTreeMap<&String, &tandem_config::DataClass> = BTreeMap::new();
    for (c, d) in &config.data_classes {
        classes.insert(c, d);
    }
    for (class, budget) in classes {
        out.push_str(&format!("{class:<14}"));
        for r in regions.values() {
            let b = &r["budgets"][class.as_str()];
            let cell = match b["lag_seconds"].as_f64() {
                Some(lag) if b["breached"] == true => format!("{red}{lag:>10.1} BREACH{reset}"),
                Some(lag) => format!("{lag:>16.2}"),
                None => format!("{:>16}", "-"),
            };
            out.push_str(&format!(" {cell}"));
        }
        out.push_str(&format!(
            "   {:>6}  {}\n",
            budget.max_lag.as_secs_f64(),
            budget.on_breach.as_str()
        ));
    }
    out.push_str("\nSTORAGE\n");
    out.push_str(&format!(
        "{:<12} {:>12} {:>14} {:>12} {:>12} {:>10} {:>12}  {}\n",
        "REGION",
        "LOG ENTRIES",
        "LOG POSITION",
        "STORE MiB",
        "FREE MiB",
        "AUDIT MiB",
        "HORIZON AGE",
        "DISK"
    ));
    let mib = |v: &Value| v.as_f64().map_or("-".to_owned(), |b| format!("{:.1}", b / 1048576.0));
    for (name, r) in &regions {
        let full = r["storage"]["full"] == true;
        let evicted: Vec<&str> = r["stability"]["evicted"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut disk = if full { format!("{red}FULL{reset}") } else { "ok".to_owned() };
        if !evicted.is_empty() {
            disk.push_str(&format!(", evicted: {}", evicted.join(", ")));
        }
        out.push_str(&format!(
            "{:<12} {:>12} {:>14} {:>12} {:>12} {:>10} {:>12}  {}\n",
            name,
            r["log"]["entries"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
            r["log"]["last_seq"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
            mib(&r["storage"]["store_bytes"]),
            mib(&r["storage"]["free_bytes"]),
            mib(&r["audit"]["bytes"]),
            r["stability"]["age_ms"]
                .as_u64()
                .map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            disk
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counter_families_only() {
        let text = "# TYPE replication_writes counter\nreplication_writes_total{region=\"a\",entity_type=\"x\"} 3\nreplication_writes_total{region=\"a\",entity_type=\"y\"} 4\nreplication_writes_created 9\n# EOF\n";
        assert_eq!(metric_sum(text, "replication_writes_total"), 7.0);
        assert_eq!(metric_sum(text, "replication_conflicts_total"), 0.0);
    }

    #[test]
    fn renders_breaches_and_down_regions() {
        let config = tandem_config::Config::example();
        let report = serde_json::json!({
            "router": {"url": "http://127.0.0.1:7100", "up": true},
            "regions": {
                "eu-west": {"jurisdiction": "EU", "up": true, "drained": false, "router_up": true, "isolated": false,
                    "budgets": {"credentials": {"lag_seconds": 7.5, "breached": true}}, "peers": [{"queue_depth": 12}],
                    "conflict_rate": 0.002, "invariant_violations": 1.0,
                    "log": {"entries": 1234, "last_seq": 987654},
                    "storage": {"store_bytes": 3_145_728, "free_bytes": 1_048_576, "full": true}},
                "us-east": {"jurisdiction": "US", "up": false, "drained": null, "router_up": false}
            }
        });
        let text = render(&config, &report, false);
        assert!(text.contains("BREACH"), "{text}");
        assert!(text.contains("DOWN"), "{text}");
        assert!(text.contains("0.200%"), "{text}");
        assert!(text.contains("12"), "{text}");
        let storage = text.lines().find(|l| l.starts_with("eu-west") && l.contains("1234"));
        let storage = storage.unwrap_or_else(|| panic!("a storage line for eu-west: {text}"));
        for part in ["987654", "3.0", "1.0", "FULL"] {
            assert!(storage.contains(part), "{part} in {storage}");
        }
    }
}
