//! A deployment of separate `tandem node` processes started by the kit (no
//! router), for flags that `tandem up` does not pass per region. Each node
//! reaches each peer through a [`LinkProxy`] of its own, so that a directed
//! link can be cut and healed as under `tandem up`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use tandem_config::Config;

use super::proxy::LinkProxy;
use super::Settings;
use crate::process::Proc;

pub(crate) struct DirectRunner {
    nodes: BTreeMap<String, DirectNode>,
    /// Directed links `(from, to)`: the proxy `to` pulls `from`'s changes through.
    links: BTreeMap<(String, String), LinkProxy>,
    settings: Settings,
}

struct DirectNode {
    args: Vec<String>,
    log: PathBuf,
    proc: Mutex<Option<Proc>>,
}

impl DirectRunner {
    pub fn start(
        s: &Settings,
        config: &Config,
        config_path: &Path,
        data_dir: &Path,
        skews: &BTreeMap<String, i64>,
        root: &Path,
    ) -> DirectRunner {
        let mut links = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for region in &config.regions {
            let skew = skews.get(&region.name).copied().unwrap_or(0);
            let flags = [
                ("--config", config_path.display().to_string()),
                ("--region", region.name.clone()),
                ("--data-dir", data_dir.display().to_string()),
            ];
            let mut args = vec!["node".to_owned(), format!("--clock-skew-ms={skew}")];
            if s.insecure {
                args.push("--insecure".to_owned());
            }
            for (flag, value) in flags {
                args.extend([flag.to_owned(), value]);
            }
            for peer in config.regions.iter().filter(|p| p.name != region.name) {
                let proxy = LinkProxy::start(peer.listen);
                args.push("--peer-url".into());
                args.push(format!("{}={}://{}", peer.name, s.scheme(), proxy.addr));
                links.insert((peer.name.clone(), region.name.clone()), proxy);
            }
            let log = root.join(format!("{}.log", region.name));
            let proc = spawn(s, &args, &log);
            nodes.insert(
                region.name.clone(),
                DirectNode { args, log, proc: Mutex::new(Some(proc)) },
            );
        }
        DirectRunner { nodes, links, settings: s.clone() }
    }

    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.values().map(|n| n.log.clone()).collect()
    }

    /// Cut or heal every directed link matching `from -> to` (`*` matches
    /// every region).
    pub fn link(&self, from: &str, to: &str, action: &str) -> Result<(), String> {
        let mut matched = 0;
        for ((f, t), proxy) in &self.links {
            if (from == "*" || f == from) && (to == "*" || t == to) {
                matched += 1;
                match action {
                    "cut" => proxy.cut(),
                    "heal" => proxy.heal(),
                    _ => return Err(format!("separate nodes have no link action `{action}`")),
                }
            }
        }
        if matched == 0 {
            return Err(format!("no link {from}->{to}"));
        }
        Ok(())
    }

    /// `kill` (SIGKILL and reap), `stop` (SIGTERM and wait) or `start` a region.
    pub fn process(&self, region: &str, action: &str) -> Result<(), String> {
        let node = self.nodes.get(region).ok_or_else(|| format!("no region `{region}`"))?;
        let mut proc = node.proc.lock().expect("node");
        match action {
            "kill" => proc.take().ok_or_else(|| format!("{region} is not running"))?.kill9(),
            "stop" => {
                let p = proc.take().ok_or_else(|| format!("{region} is not running"))?;
                if !p.stop(self.settings.limits.stop) {
                    return Err(format!("{region} did not stop on SIGTERM"));
                }
            }
            "start" if proc.is_some() => return Err(format!("{region} is running")),
            "start" => *proc = Some(spawn(&self.settings, &node.args, &node.log)),
            _ => return Err(format!("no process action `{action}`")),
        }
        Ok(())
    }

    /// Pid and whether it is running, per region.
    pub fn processes(&self) -> BTreeMap<String, (Option<u32>, bool)> {
        self.nodes
            .iter()
            .map(|(name, n)| {
                let mut proc = n.proc.lock().expect("node");
                let state = match proc.as_mut() {
                    Some(p) => (Some(p.id()), p.exited().is_none()),
                    None => (None, false),
                };
                (name.clone(), state)
            })
            .collect()
    }

    /// The exit status of a region that stopped on its own, if any.
    pub fn exited(&self, region: &str) -> Option<String> {
        let mut proc = self.nodes.get(region)?.proc.lock().expect("node");
        proc.as_mut()?.exited().map(|s| s.to_string())
    }

    /// SIGTERM every node, then wait for each; false when one had to be SIGKILLed.
    pub fn stop(&self, timeout: Duration) -> bool {
        let procs: Vec<Proc> =
            self.nodes.values().filter_map(|n| n.proc.lock().expect("node").take()).collect();
        for p in &procs {
            p.signal(Signal::SIGTERM);
        }
        // Every one gets its time: no short cut on the first that hangs.
        let mut clean = true;
        for p in procs {
            clean &= p.finish(timeout);
        }
        clean
    }
}

fn spawn(s: &Settings, args: &[String], log: &Path) -> Proc {
    let mut cmd = s.bin.command();
    // No `tandem up` to generate the pseudonym keys: the kit's (the
    // builder's environment may override them).
    cmd.args(args).envs(crate::config::TEST_PSEUDONYM_KEYS);
    super::builder::apply_env(&mut cmd, s);
    Proc::spawn(cmd, log, log)
}
