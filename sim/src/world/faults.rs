//! Faults: crashes and restarts, power loss, pauses, network cuts, lost control
//! pushes, controller failovers, leadership moves, and the healing that ends the fault
//! phase.

use std::time::Duration;

use sluice_controller::state::ClusterState;

use super::*;

impl World {
    // ---- faults ---------------------------------------------------------------------

    pub(super) fn crash(&mut self, i: usize, why: &str) {
        let n = &mut self.nodes[i];
        n.up = false;
        // Everything in memory goes with the process: roles, high watermarks, producer
        // state, waiting produces (their clients see the connection drop).
        n.rm = None;
        n.waiters.clear();
        n.fetch = None;
        n.broker_epoch = None;
        n.paused_until = 0;
        let after = self.rng.range(200, 4000);
        self.timer(after, Timer::Restart(i));
        self.trace(|| format!("b{} crashes ({why}); restarts in {after} ms", i + 1));
    }

    pub(super) fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = true;
        n.incarnation += 1;
        n.ticks = 0;
        n.broker_epoch = None;
        let rm = self.start_manager(i);
        self.nodes[i].rm = Some(rm);
        self.trace(|| format!("b{} restarts", i + 1));
    }

    pub(super) fn fault(&mut self) {
        self.report.faults += 1;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        let Some(&i) = self.rng.pick(&up) else { return };
        let kinds = 8 + u64::from(self.cfg.power_loss);
        match self.rng.range(0, kinds) {
            0 => self.crash(i, "kill -9"),
            7 => {
                let ms = self.rng.range(2000, 20_000);
                self.nodes[i].pushes_cut_until = self.now_ms + ms;
                self.trace(|| {
                    format!(
                        "controller's pushes to b{} cut for {ms} ms (heartbeats flow)",
                        i + 1
                    )
                });
            }
            8 => self.power_loss(i),
            1 => {
                self.tear_next = Some(i);
                self.trace(|| format!("b{} will crash mid-write", i + 1));
            }
            2 => {
                let ms = self.rng.range(1000, 4000);
                self.nodes[i].paused_until = self.now_ms + ms;
                self.trace(|| format!("b{} paused for {ms} ms", i + 1));
            }
            3 => {
                let from_controller = self.rng.chance(0.5);
                self.nodes[i].isolated = Some(from_controller);
                let ms = self.rng.range(1000, 5000);
                self.timer(ms, Timer::Heal(i));
                self.trace(|| format!("b{} cut from its peers (and the controller: {from_controller}) for {ms} ms", i + 1));
            }
            4 => {
                self.controller_epoch += 1;
                let snap = self.controller.snap.clone();
                self.controller = ClusterState::new(
                    snap,
                    self.now(),
                    Duration::from_millis(self.cfg.session_timeout_ms),
                    CONTROLLER_ID,
                    self.controller_epoch,
                );
                let epoch = self.controller_epoch;
                self.trace(|| format!("controller fails over to epoch {epoch}"));
                let actions = self.controller.all_leader_and_isr();
                self.controller_actions(actions);
            }
            _ => self.move_leadership(),
        }
    }

    /// Reorders the replica list so another replica is preferred, then elects it.
    pub(super) fn move_leadership(&mut self) {
        let Some(p) = self.partition_record().cloned() else {
            return;
        };
        let mut order = p.replicas.clone();
        let k = self.rng.range(1, order.len() as u64) as usize;
        order.rotate_left(k);
        if let Ok(actions) = self.controller.reassign(TOPIC, 0, order.clone()) {
            self.controller_actions(actions);
        }
        if let Ok((moved, actions)) = self.controller.elect_preferred(Some(TOPIC)) {
            self.trace(|| format!("leadership moved to {order:?}[0]: {moved} partition(s)"));
            self.controller_actions(actions);
        }
    }

    /// Power loss: the broker crashes and its logs keep only what was flushed. With
    /// `power_loss_all`, half the power losses take every live broker down at once
    /// (a rack or data centre losing power).
    pub(super) fn power_loss(&mut self, i: usize) {
        let all = self.cfg.power_loss_all && self.rng.chance(0.5);
        let victims: Vec<usize> = if all {
            (0..self.nodes.len())
                .filter(|&j| self.nodes[j].up)
                .collect()
        } else {
            vec![i]
        };
        for j in victims {
            self.report.power_losses += 1;
            let lost = self.nodes[j].store.power_loss();
            self.crash(j, &format!("power loss: {lost} unflushed records gone"));
        }
    }

    pub(super) fn heal_all(&mut self) {
        self.healing_since = Some(self.now_ms);
        self.tear_next = None;
        self.trace(|| "healing: no more faults".into());
        for i in 0..self.nodes.len() {
            self.nodes[i].isolated = None;
            self.nodes[i].pushes_cut_until = self.nodes[i].pushes_cut_until.min(self.now_ms);
            self.nodes[i].paused_until = self.nodes[i].paused_until.min(self.now_ms);
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
    }
}
