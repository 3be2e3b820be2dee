//! What the drill has done to the target region and not undone yet: drained
//! at the router, cut off from replication, its process killed. The phases
//! take the target out and bring it back through these actions, each
//! remembered once it succeeded, so that [`TargetState::put_back`] undoes
//! whatever is still in effect when the drill stops half-way (an error or
//! ctrl-c).

use super::deployment::Deployment;

#[derive(Debug, Default)]
pub(super) struct TargetState {
    drained: bool,
    isolated: bool,
    killed: bool,
}

impl TargetState {
    /// Drain the target at the router.
    pub(super) async fn drain(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.router_action("drain").await?;
        self.drained = true;
        Ok(())
    }

    /// Route to the target again.
    pub(super) async fn restore_routing(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.router_action("restore").await?;
        self.drained = false;
        Ok(())
    }

    /// Stop the target's replication with every peer (it keeps running).
    pub(super) async fn isolate(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.node_action("isolate").await?;
        self.isolated = true;
        Ok(())
    }

    /// Resume the target's replication.
    pub(super) async fn rejoin(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.node_action("rejoin").await?;
        self.isolated = false;
        Ok(())
    }

    /// SIGKILL the target's process through the control API.
    pub(super) async fn kill(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.control_action("kill").await?;
        self.killed = true;
        Ok(())
    }

    /// Start the target's process again (the control API answers once it serves).
    pub(super) async fn start(&mut self, dep: &Deployment) -> anyhow::Result<()> {
        dep.control_action("start").await?;
        self.killed = false;
        Ok(())
    }

    /// Undo what is still in effect (after an error or an interrupt); what
    /// cannot be undone becomes a finding.
    pub(super) async fn put_back(&mut self, dep: &Deployment, findings: &mut Vec<String>) {
        if self.killed {
            if let Err(e) = self.start(dep).await {
                findings.push(format!("could not restart {}: {e:#}", dep.target));
            }
        }
        if self.isolated {
            if let Err(e) = self.rejoin(dep).await {
                findings.push(format!("could not rejoin {}: {e:#}", dep.target));
            }
        }
        if self.drained {
            if let Err(e) = self.restore_routing(dep).await {
                findings.push(format!("could not restore routing to {}: {e:#}", dep.target));
            }
        }
    }
}
