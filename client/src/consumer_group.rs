//! The group side of [`Consumer`]: `subscribe`, rebalance callbacks, commits
//! (`commit`, `commit_async`, `commit_offsets`, auto-commit), `committed`, `lag`,
//! `close`, and `reconcile`, which `poll` runs first to apply the coordinator's answer:
//! lost partitions go without a commit, revoked ones after one (auto-commit), new ones
//! start at their committed offsets. A fenced member never commits (see [`committer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::{ErrorCode, TopicPartition};
use tokio::task::JoinHandle;
use tracing::debug;

use super::{Consumer, GroupMember, Seek};
use crate::group::{
    heartbeat_loop, CoordinatorLink, GroupOptions, Membership, RebalanceEvent, Subscription,
};
use crate::Error;

impl Consumer {
    /// Joins consumer group `opts.group_id` with `subscription`; from now on the group
    /// assigns this consumer's partitions (which `assign` must not be mixed with). Must
    /// be called within a tokio runtime.
    pub fn subscribe(
        &mut self,
        opts: GroupOptions,
        subscription: Subscription,
    ) -> Result<(), Error> {
        if self.group.is_some() {
            return Err(Error::Invalid("already subscribed".into()));
        }
        if opts.group_id.is_empty() {
            return Err(Error::Invalid("the group id is empty".into()));
        }
        match &subscription {
            Subscription::Topics(t) if t.is_empty() => {
                return Err(Error::Invalid("subscribe to at least one topic".into()))
            }
            _ => {}
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Invalid("subscribe must be called within a tokio runtime".into())
        })?;
        self.assign(Vec::new());
        let link = CoordinatorLink::new(self.cluster.clone(), &opts.group_id);
        let state = Arc::new(parking_lot::Mutex::new(Membership::default()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let changed = Arc::new(tokio::sync::Notify::new());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = runtime.spawn(heartbeat_loop(
            link.clone(),
            opts.clone(),
            subscription,
            state.clone(),
            wake.clone(),
            changed.clone(),
            stop_rx,
        ));
        self.group = Some(GroupMember {
            link,
            opts,
            state,
            wake,
            changed,
            stop,
            task: Some(task),
            owned: BTreeSet::new(),
            committed: BTreeMap::new(),
            last_auto_commit: tokio::time::Instant::now(),
            auto_commit: None,
            listener: None,
        });
        Ok(())
    }

    /// Called with every change of what a subscribed consumer owns, from within `poll`.
    pub fn on_rebalance(&mut self, listener: impl FnMut(RebalanceEvent) + Send + 'static) {
        if let Some(g) = &mut self.group {
            g.listener = Some(parking_lot::Mutex::new(Box::new(listener)));
        }
    }

    /// The member id and epoch in the group (`None` without a group, or before joining).
    pub fn member(&self) -> Option<(String, i32)> {
        let g = self.group.as_ref()?;
        let s = g.state.lock();
        (!s.member_id.is_empty()).then(|| (s.member_id.clone(), s.epoch))
    }

    /// Positions of the owned partitions that moved since the last commit.
    fn positions_to_commit(
        &self,
        only: Option<&BTreeSet<TopicPartition>>,
    ) -> BTreeMap<TopicPartition, u64> {
        let Some(g) = &self.group else {
            return BTreeMap::new();
        };
        g.owned
            .iter()
            .filter(|tp| only.is_none_or(|o| o.contains(*tp)))
            .filter_map(|tp| Some((tp.clone(), self.parts.get(tp)?.position?)))
            .filter(|(tp, o)| g.committed.get(tp) != Some(o))
            .collect()
    }

    /// Commits the position of every owned partition (the offset after the last record
    /// `poll` returned) and waits for the coordinator's acknowledgement.
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.commit_some(None).await
    }

    async fn commit_some(&mut self, only: Option<&BTreeSet<TopicPartition>>) -> Result<(), Error> {
        // An auto-commit in flight lands first, so offsets never go back.
        if let Some(h) = self.group.as_mut().and_then(|g| g.auto_commit.take()) {
            if !matches!(h.await, Ok(Ok(()))) {
                if let Some(g) = &mut self.group {
                    g.committed.clear();
                }
            }
        }
        let offsets = self.positions_to_commit(only);
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let Some((member, epoch)) = committer(&g.state) else {
            // Fenced: what it held is lost, not committed (others may own it now).
            return Err(commit_failed_fenced(offsets.len()));
        };
        g.link.commit(&member, epoch, &offsets).await?;
        g.committed.extend(offsets);
        Ok(())
    }

    /// Commits `offsets` (each the offset of the next record to read) as this member,
    /// whatever the positions are: for an application that processed only part of what
    /// `poll` returned.
    pub async fn commit_offsets(
        &mut self,
        offsets: BTreeMap<TopicPartition, u64>,
    ) -> Result<(), Error> {
        if let Some(h) = self.group.as_mut().and_then(|g| g.auto_commit.take()) {
            let _ = h.await;
        }
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let Some((member, epoch)) = committer(&g.state) else {
            return Err(commit_failed_fenced(offsets.len()));
        };
        // As Kafka's CommitFailedException: nothing is committed when any partition is
        // not this member's (another member may own it and commit its own offsets).
        let foreign: Vec<String> = offsets
            .keys()
            .filter(|tp| !g.owned.contains(*tp))
            .map(|tp| tp.to_string())
            .collect();
        if !foreign.is_empty() {
            return Err(Error::broker(
                ErrorCode::StaleMemberEpoch.code(),
                format!(
                    "commit failed: this member does not own {} (revoked or never assigned); nothing was committed",
                    foreign.join(", ")
                ),
            ));
        }
        g.link.commit(&member, epoch, &offsets).await?;
        g.committed.extend(offsets);
        Ok(())
    }

    /// Starts a commit of every owned partition's position; the handle tells how it
    /// went.
    pub fn commit_async(&mut self) -> Result<JoinHandle<Result<(), Error>>, Error> {
        let offsets = self.positions_to_commit(None);
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        let Some((member, epoch)) = committer(&g.state) else {
            let n = offsets.len();
            return Ok(tokio::spawn(async move {
                match n {
                    0 => Ok(()),
                    n => Err(commit_failed_fenced(n)),
                }
            }));
        };
        // Counted as committed now; a failed commit is retried by the next one only if
        // the position moves again (as Kafka's commitAsync, which never retries).
        g.committed.extend(offsets.clone());
        let link = g.link.clone();
        Ok(tokio::spawn(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            link.commit(&member, epoch, &offsets).await
        }))
    }

    /// The group's committed offsets of `tps` (`None`: nothing committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, Error> {
        let Some(g) = &self.group else {
            return Err(Error::Invalid(
                "committed offsets need a group: subscribe first".into(),
            ));
        };
        g.link.committed(tps).await
    }

    /// Records between the position and the high watermark last seen.
    pub fn lag(&self, tp: &TopicPartition) -> Option<u64> {
        let p = self.parts.get(tp)?;
        Some(p.high_watermark?.saturating_sub(p.position?))
    }

    /// Leaves the group: commits positions (with auto-commit), gives every partition
    /// back and tells the coordinator, so others take them over at once.
    pub async fn close(&mut self) -> Result<(), Error> {
        let committed = if self
            .group
            .as_ref()
            .is_some_and(|g| g.opts.auto_commit_interval.is_some())
        {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(mut g) = self.group.take() {
            let owned: Vec<TopicPartition> = g.owned.iter().cloned().collect();
            if !owned.is_empty() {
                if let Some(l) = &mut g.listener {
                    (l.get_mut())(RebalanceEvent::Revoked(owned));
                }
            }
            g.stop.send_replace(true);
            if let Some(task) = g.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
            }
        }
        self.assign(Vec::new());
        committed
    }

    /// Applies the coordinator's latest answer: lost partitions go without a commit,
    /// revoked ones after one (auto-commit), new ones start at their committed offsets.
    pub(super) async fn reconcile(&mut self) -> Result<(), Error> {
        let Some(g) = &mut self.group else {
            return Ok(());
        };
        let (target, lost, fatal) = {
            let mut s = g.state.lock();
            (
                s.target.clone(),
                std::mem::take(&mut s.lost),
                s.fatal.clone(),
            )
        };
        if let Some(e) = fatal {
            // Sticky: the heartbeat task has stopped, so nothing is owned any more.
            g.owned.clear();
            self.assign(Vec::new());
            return Err(e);
        }
        if lost {
            let gone: Vec<TopicPartition> = std::mem::take(&mut g.owned).into_iter().collect();
            g.committed.clear();
            g.state.lock().owned.clear();
            if !gone.is_empty() {
                if let Some(l) = &mut g.listener {
                    (l.get_mut())(RebalanceEvent::Lost(gone));
                }
            }
            self.assign(Vec::new());
            self.group.as_ref().expect("subscribed").wake.notify_one();
            return Ok(());
        }
        let Some(target) = target else {
            return Ok(());
        };
        let revoked: BTreeSet<TopicPartition> = g.owned.difference(&target).cloned().collect();
        let added: Vec<TopicPartition> = target.difference(&g.owned).cloned().collect();
        if revoked.is_empty() && added.is_empty() {
            return Ok(());
        }
        if !revoked.is_empty() {
            if g.opts.auto_commit_interval.is_some() {
                if let Err(e) = self.commit_some(Some(&revoked)).await {
                    debug!(error = %e, "commit on revoke failed");
                }
            }
            let g = self.group.as_mut().expect("subscribed");
            if let Some(l) = &mut g.listener {
                (l.get_mut())(RebalanceEvent::Revoked(revoked.iter().cloned().collect()));
            }
            for tp in &revoked {
                g.owned.remove(tp);
                g.committed.remove(tp);
            }
        }
        let g = self.group.as_mut().expect("subscribed");
        let starts = if added.is_empty() {
            BTreeMap::new()
        } else {
            g.link.committed(&added).await?
        };
        let g = self.group.as_mut().expect("subscribed");
        g.owned.extend(added.iter().cloned());
        for (tp, o) in &starts {
            if let Some(o) = o {
                g.committed.insert(tp.clone(), *o);
            }
        }
        let owned: Vec<TopicPartition> = g.owned.iter().cloned().collect();
        g.state.lock().owned = g.owned.clone();
        g.wake.notify_one();
        if !added.is_empty() {
            if let Some(l) = &mut g.listener {
                (l.get_mut())(RebalanceEvent::Assigned(added.clone()));
            }
        }
        self.assign(owned);
        for tp in added {
            if let Some(Some(o)) = starts.get(&tp) {
                self.seek(&tp, Seek::Offset(*o));
            }
        }
        Ok(())
    }

    /// Starts a commit every auto-commit interval (at the start of a poll, so what is
    /// committed is what the application got from earlier polls). It runs beside the
    /// poll, one at a time; a failed one is redone in full by the next.
    pub(super) async fn auto_commit(&mut self) {
        let Some(g) = &mut self.group else { return };
        let Some(every) = g.opts.auto_commit_interval else {
            return;
        };
        if let Some(h) = &g.auto_commit {
            if !h.is_finished() {
                return;
            }
            let h = g.auto_commit.take().expect("checked");
            if !matches!(h.await, Ok(Ok(()))) {
                debug!("auto-commit failed; committing everything again");
                g.committed.clear();
            }
        }
        if g.last_auto_commit.elapsed() < every {
            return;
        }
        g.last_auto_commit = tokio::time::Instant::now();
        match self.commit_async() {
            Ok(h) => self.group.as_mut().expect("subscribed").auto_commit = Some(h),
            Err(e) => debug!(error = %e, "auto-commit not started"),
        }
    }
}

/// The member id and epoch to commit with; `None` while fenced (lost, rejoining).
/// What a commit of a member that lost its partitions (fenced, session expired, a fatal
/// error) answers: those partitions may be someone else's now, so nothing is committed.
fn commit_failed_fenced(partitions: usize) -> Error {
    Error::broker(
        ErrorCode::FencedMemberEpoch.code(),
        format!(
            "commit failed: the member was fenced from its group and its partitions may be \
             owned by others; {partitions} offset(s) not committed (poll again to rejoin)"
        ),
    )
}

fn committer(state: &parking_lot::Mutex<Membership>) -> Option<(String, i32)> {
    let s = state.lock();
    (!s.lost && s.epoch > 0 && s.fatal.is_none()).then(|| (s.member_id.clone(), s.epoch))
}
