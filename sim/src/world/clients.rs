//! The producer (acks=all, bounded in flight) and the invariants checked over the
//! whole world: logs agree below their high watermarks, and what "healed" means.

use super::*;

impl World {
    // ---- producer and consumer ------------------------------------------------------

    pub(super) fn client_tick(&mut self) {
        let now = self.now_ms;
        self.client_inflight
            .retain(|_, (_, sent)| *sent + CLIENT_TIMEOUT_MS > now);
        let done = self.healing_since.is_some() && self.acked_after_heal >= 20;
        if done || self.client_inflight.len() >= CLIENT_INFLIGHT_MAX {
            return;
        }
        let Some(leader) = self.partition_record().and_then(|p| p.leader) else {
            return;
        };
        let (req, id) = (self.next_client_req, self.next_record);
        self.next_client_req += 1;
        self.next_record += 1;
        self.client_inflight.insert(req, (id, now));
        self.send(
            Addr::Client,
            Addr::Broker(leader as usize - 1),
            Msg::Produce { req, id },
        );
    }

    pub(super) fn client_receive(&mut self, msg: Msg) -> Result<(), Violation> {
        if let Msg::Produced { req, result } = msg {
            if self.client_inflight.remove(&req).is_some()
                && result.is_ok()
                && self.healing_since.is_some()
            {
                self.acked_after_heal += 1;
            }
        }
        Ok(())
    }

    // ---- invariants -----------------------------------------------------------------

    pub(super) fn check_step(&mut self) -> Result<(), Violation> {
        if !self.step.is_multiple_of(16) {
            return Ok(());
        }
        let logs: Vec<(BrokerId, Vec<Entry>, Offset)> = (0..self.nodes.len())
            .filter_map(|i| {
                let hw = self.high_watermark(i)?;
                Some((self.nodes[i].id, self.entries(i), Offset(hw)))
            })
            .collect();
        let views: Vec<(BrokerId, &[Entry], Offset)> = logs
            .iter()
            .map(|(b, l, h)| (*b, l.as_slice(), *h))
            .collect();
        self.checker.agree(&views)
    }

    /// Whole again: every replica in the ISR, every log equal to the leader's and
    /// committed, and the producer got acks after healing.
    pub(super) fn healed(&self) -> Result<bool, Violation> {
        let Some(p) = self.partition_record() else {
            return Ok(false);
        };
        if p.isr.len() != p.replicas.len() || self.acked_after_heal < 20 {
            return Ok(false);
        }
        let Some(leader) = p.leader else {
            return Ok(false);
        };
        let l = self.entries(leader as usize - 1);
        let whole = (0..self.nodes.len()).all(|i| {
            self.nodes[i].up
                && self.entries(i) == l
                && self.high_watermark(i) == Some(l.len() as u64)
        });
        Ok(whole)
    }

    pub(super) fn final_check(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            self.checker.holds_all(self.nodes[i].id, &self.entries(i))?;
        }
        Ok(())
    }
}
