//! Opening a partition log: listing segments, trusting a cleanly closed log without
//! reading it, and crash recovery (scan from the recovery point, cut the first bad
//! batch and everything after it, rebuild indexes). Also the `log-start-offset` file.
//! A child of `log.rs`, so it builds [`Log`] from its private fields.

use super::*;

/// Base offsets of the `.log` files in `dir`. Stray temp files, and index files whose
/// `.log` is gone (a crash between deletions), are removed so a segment created later
/// at that base never picks up stale entries.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".tmp") || name.ends_with(".truncating") {
            fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<u64>() else {
            continue;
        };
        match ext {
            "log" => bases.push(base),
            "index" | "timeindex" => indexes.push((base, path)),
            _ => {}
        }
    }
    for (base, path) in indexes {
        if !bases.contains(&base) {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("partition", &self.tp)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing). `hint` says whether the last close
    /// was clean; after a crash every segment from the recovery point on is scanned.
    pub(crate) fn open(
        dir: PathBuf,
        tp: TopicPartition,
        config: LogConfig,
        hint: OpenHint,
    ) -> Result<Log, LogError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // Checked first: a directory whose identity is unreadable is not served.
        let topic_id = super::super::topic_id::read(&dir)?;
        compaction::complete_interrupted_clean(&dir)?;
        let now = now_ms();
        let mut stats = OpenStats::default();
        let saved_start = read_log_start(&dir)?;
        let mut bases = list_segments(&dir)?;
        if bases.is_empty() {
            bases.push(saved_start.unwrap_or(0));
        }
        let mut epochs = EpochCache::open(dir.join(EPOCH_FILE))?;
        let last_base = *bases.last().expect("non-empty");
        let mut segments = BTreeMap::new();
        for &base in &bases {
            segments.insert(
                base,
                Segment::open(&dir, base, &config, base == last_base, now)?,
            );
        }
        stats.segments = segments.len();
        let clean_end = hint
            .recovery_point
            .filter(|&rp| hint.clean && rp >= last_base);
        let log_end_offset = match clean_end {
            Some(end) => {
                // Trust the files; only indexes failing their (log-free) check get rebuilt.
                let mut next = 0;
                for seg in segments.values_mut() {
                    if !seg.indexes_sane() {
                        let out = seg.recover(next)?;
                        stats.segments_scanned += 1;
                        stats.log_bytes_read += out.bytes_read;
                    }
                    next = seg.base_offset;
                }
                end
            }
            None => Self::recover(
                &dir,
                &mut segments,
                &mut epochs,
                hint.recovery_point.unwrap_or(0),
                &mut stats,
            )?,
        };
        epochs.truncate_from_end(log_end_offset)?;
        let first_base = *segments.keys().next().expect("non-empty");
        let log_start_offset = saved_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end_offset);
        if saved_start.is_some_and(|s| s > log_start_offset) {
            // A crash took the log below its saved start; persist the clamp.
            write_log_start(&dir, log_start_offset)?;
        }
        let flushed = if clean_end.is_some() {
            log_end_offset
        } else {
            hint.recovery_point.unwrap_or(0).min(log_end_offset)
        };
        if stats.truncated_bytes > 0 {
            warn!(partition = %tp, truncated_bytes = stats.truncated_bytes, log_end_offset, "recovery cut an invalid tail");
        }
        let cleaner_checkpoint = compaction::read_cleaner_checkpoint(&dir);
        Ok(Log {
            dir,
            tp,
            state: Mutex::new(State {
                config,
                segments,
                log_start_offset,
                log_end_offset,
                epochs,
                offline: None,
                last_flush_ms: now,
                first_dirty_offset: cleaner_checkpoint.0.min(log_end_offset),
                tombstones_removed_below: cleaner_checkpoint.1,
                tombstone_removals: super::compaction::TombstoneRemovals::new(),
                dir_sync_pending: false,
                generation: 0,
                next_tombstone_horizon_ms: None,
                last_clean_ms: None,
            }),
            flush_lock: Mutex::new(()),
            flushed_offset: AtomicU64::new(flushed),
            flush_count: AtomicU64::new(0),
            truncation_hook: Mutex::new(None),
            open_stats: stats,
            topic_id: Mutex::new(topic_id),
        })
    }

    /// Crash recovery: scans from the segment holding `recovery_point`; the first bad
    /// batch and everything after it (later segments included) is deleted.
    fn recover(
        dir: &Path,
        segments: &mut BTreeMap<u64, Segment>,
        epochs: &mut EpochCache,
        recovery_point: u64,
        stats: &mut OpenStats,
    ) -> Result<u64, LogError> {
        let start = segments
            .range(..=recovery_point)
            .next_back()
            .map_or(0, |(b, _)| *b);
        let bases: Vec<u64> = segments.keys().copied().collect();
        let mut next = 0u64;
        let mut cut_at = None;
        for (i, &base) in bases.iter().enumerate() {
            let seg = segments.get_mut(&base).expect("listed");
            if base < start && seg.indexes_sane() {
                next = bases[i + 1];
                continue;
            }
            let out = seg.recover(next)?;
            stats.segments_scanned += 1;
            stats.log_bytes_read += out.bytes_read;
            stats.truncated_bytes += out.truncated_bytes;
            for (epoch, offset) in out.epochs {
                if epoch >= 0 {
                    epochs.assign(epoch as u32, offset)?;
                }
            }
            next = out.next_offset.unwrap_or(next.max(base));
            if out.truncated_bytes > 0 || (out.next_offset.is_none() && i + 1 < bases.len()) {
                cut_at = Some(i);
                break;
            }
        }
        if let Some(i) = cut_at {
            for &base in &bases[i + 1..] {
                let seg = segments.remove(&base).expect("listed");
                stats.truncated_bytes += seg.size();
                seg.delete_files()?;
            }
            // An empty segment that is not the first carries no offsets: drop it so the
            // next append starts a segment at the true end.
            let last = *segments.keys().next_back().expect("non-empty");
            if segments.len() > 1 && segments[&last].size() == 0 && last != next {
                segments.remove(&last).expect("present").delete_files()?;
            }
            fsync_dir(dir).map_err(io_err(dir))?;
        }
        let last = *segments.keys().next_back().expect("non-empty");
        let seg = segments.get_mut(&last).expect("present");
        seg.unseal()?;
        for s in segments.values_mut().rev().skip(1) {
            s.seal()?;
        }
        Ok(next.max(last))
    }
}

fn read_log_start(dir: &Path) -> Result<Option<u64>, LogError> {
    let path = dir.join(LOG_START_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| LogError::Corrupt {
            path,
            position: 0,
            reason: "log start offset is not a number".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(&path, e)),
    }
}

pub(super) fn write_log_start(dir: &Path, offset: u64) -> Result<(), LogError> {
    let path = dir.join(LOG_START_FILE);
    write_atomically(&path, offset.to_string().as_bytes()).map_err(io_err(&path))
}
