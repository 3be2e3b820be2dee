//! Acknowledgements in the simulation, as the node's `replication::ack`
//! loop sends them: every `ACK_MS` each region that is up ticks its
//! stability horizon (recorded in the history beside what every region had
//! applied then, for `check::stability`) and sends its positions to each
//! peer over the link it pulls that peer on, lossy like everything else.

use std::collections::BTreeMap;

use super::Sim;
use crate::history::Event;
use crate::net::Payload;
use crate::region::Path;

impl Sim {
    /// Every region that is up ticks its stability horizon (recorded beside
    /// what every region had applied then) and acknowledges its positions to
    /// each peer over the link it pulls that peer on.
    pub(super) fn acknowledge(&mut self) {
        let names: Vec<String> = self.world.regions.clone();
        let mut applied = BTreeMap::new();
        for p in &names {
            let region = &self.regions[p];
            for o in &names {
                let at = if o == p { region.last_seq() } else { region.cursor(o, Path::Direct) };
                applied.insert((p.clone(), o.clone()), at);
            }
        }
        for r in &names {
            if !self.regions[r].up {
                continue;
            }
            let region = self.regions.get_mut(r).expect("region");
            region.tick_stability();
            if let Some(h) = region.horizon() {
                self.history.events.push(Event::Horizon {
                    at_ms: self.now,
                    region: r.clone(),
                    horizon: h.clone(),
                    applied: applied.clone(),
                });
            }
            let report = region.own_report();
            for p in names.iter().filter(|p| *p != r) {
                let payload = Payload::Ack { report: report.clone() };
                self.send(r, p, (p.clone(), r.clone()), payload);
            }
        }
    }
}
