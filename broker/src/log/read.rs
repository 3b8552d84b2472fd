//! Reading a partition log: [`Log::read`] and [`Log::offset_for_timestamp`]. Both take
//! a view of a segment under the log's lock (bounds, the segment, an index lookup, the
//! sealed file's map) and scan it after releasing the lock; docs/storage.md says why a
//! view stays valid without it. A child of `log.rs`, so it works on [`Log`]'s private
//! state.

use super::*;

/// How often [`Log::read`] starts over when a truncation rewrote what it was reading
/// (or moves to a next segment) before it answers empty.
const READ_ATTEMPTS_MAX: usize = 64;

#[cfg(test)]
thread_local! {
    /// Tests: called where a read, with its view of a segment taken, is about to touch
    /// the data (the page faults of a cold mmap), to show what that part holds.
    pub(crate) static READ_PAUSE: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn read_pause() {
    READ_PAUSE.with(|p| {
        if let Some(f) = p.borrow_mut().as_mut() {
            f()
        }
    })
}

impl Log {
    /// Whole batches starting with the one holding `from`, about `max_bytes` of them
    /// (at least one whole batch, so a consumer always progresses), none of which reaches
    /// `up_to` (exclusive; the high watermark for consumers). `from` must lie in
    /// `[log_start_offset, log_end_offset]`.
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
        up_to: Option<u64>,
    ) -> Result<ReadResult, LogError> {
        let mut result: Option<ReadResult> = None;
        let mut at = from;
        for _ in 0..READ_ATTEMPTS_MAX {
            // Under the lock: bounds, the segment holding `at`, and a view of it.
            let (view, next_base, limit, generation) = {
                let mut st = self.state.lock();
                self.check_online(&st)?;
                let (start, end) = (st.log_start_offset, st.log_end_offset);
                if result.is_none() && (from < start || from > end) {
                    return Err(LogError::OffsetOutOfRange {
                        requested: from,
                        log_start_offset: start,
                        log_end_offset: end,
                    });
                }
                let limit = up_to.unwrap_or(end).min(end);
                let r = result.get_or_insert_with(|| ReadResult {
                    data: Bytes::new(),
                    log_start_offset: start,
                    log_end_offset: end,
                });
                let holding = st.segments.range(..=at).next_back().map(|(b, _)| *b);
                let Some(base) =
                    holding.or_else(|| st.segments.range(at..).next().map(|(b, _)| *b))
                else {
                    return Ok(r.clone());
                };
                if base > at && base >= limit {
                    return Ok(r.clone());
                }
                let seg = st.segments.get_mut(&base).expect("listed");
                let view = match seg.read_view(at) {
                    Ok(v) => v,
                    Err(e) => return Err(self.fail(&mut st, e)),
                };
                let next_base = st.segments.range(base + 1..).next().map(|(b, _)| *b);
                (view, next_base, limit, st.generation)
            };
            // Outside it: the scan for `at` and the data, the part that touches the disk.
            #[cfg(test)]
            read_pause();
            let mut found = view.find(at).and_then(|b| match b {
                Some(b) => view.read(&b, max_bytes as u64, limit).map(Some),
                None => Ok(None),
            });
            if view.reads_active_file() || found.is_err() {
                // A truncation meanwhile may have rewritten what the view read: again.
                let mut st = self.state.lock();
                if st.generation != generation {
                    continue;
                }
                found = found.map_err(|e| self.fail(&mut st, e));
            }
            let r = result.as_mut().expect("set above");
            match found? {
                Some(data) => {
                    r.data = data;
                    return Ok(r.clone());
                }
                // Nothing at or past `at` here (compaction emptied the segment's tail):
                // the next segment's first batch is the answer, if below the limit.
                None => match next_base {
                    Some(n) if n < limit => at = n,
                    _ => return Ok(r.clone()),
                },
            }
        }
        // Truncated under this read every time: answer empty, the caller asks again.
        Ok(result.unwrap_or_else(|| ReadResult {
            data: Bytes::new(),
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
        }))
    }

    /// The largest batch max timestamp of the log's segments (`None`: empty). Readable
    /// segments only: below the log start a segment's maximum may be gone.
    pub fn max_timestamp(&self) -> Option<i64> {
        let st = self.state.lock();
        st.segments.values().filter_map(|s| s.max_timestamp()).max()
    }

    /// The first offset whose record timestamp is `>= timestamp`, with that timestamp.
    /// Like [`Log::read`], it takes views of the candidate segments under the lock and
    /// scans them outside it.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError> {
        for _ in 0..READ_ATTEMPTS_MAX {
            let (views, generation) = {
                let mut st = self.state.lock();
                self.check_online(&st)?;
                let log_start = st.log_start_offset;
                let mut views = Vec::new();
                let mut failed = None;
                for seg in st.segments.values_mut() {
                    if seg.max_timestamp().is_none_or(|m| m < timestamp) {
                        continue;
                    }
                    let from = seg.time_lookup(timestamp).max(log_start);
                    match seg.read_view(from) {
                        Ok(v) => views.push((v, from)),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    return Err(self.fail(&mut st, e));
                }
                (views, st.generation)
            };
            let mut found = Ok(None);
            for (view, from) in &views {
                found = view.scan_for_timestamp(*from, timestamp);
                if !matches!(found, Ok(None)) {
                    break;
                }
            }
            if views.iter().any(|(v, _)| v.reads_active_file()) || found.is_err() {
                let mut st = self.state.lock();
                if st.generation != generation {
                    continue;
                }
                found = found.map_err(|e| self.fail(&mut st, e));
            }
            return found;
        }
        Ok(None)
    }
}
