//! Positions in a CDC source's change stream: what the connector writes in every record's
//! `sluice.pos` header, what a restarted connector reads back to skip what its topics already
//! hold, and what an application passes to `Table::wait_for_source` after its own commit.
//!
//! Header value (`sluice.pos`), UTF-8:
//!
//! ```text
//! pg:<LSN>#<ordinal>                              Postgres: the transaction's commit end LSN
//! my:<binlog file>:<offset>:<GTID set>#<ordinal>  MariaDB/MySQL: where the transaction ends
//!                                                 in the binlog, and the GTID state after it
//!                                                 (may be empty)
//! ```
//!
//! The ordinal numbers a transaction's records from 0 in the order the connector wrote them
//! (a heartbeat's is `u64::MAX`: it follows every record at its position). A request (what an application waits for) is the position alone:
//! a Postgres LSN (`0/16B3748`, from `pg_current_wal_lsn()`), a MariaDB GTID set
//! (`0-1-42,1-2-7`, from `@@gtid_binlog_pos`) or a binlog `file:offset`.

use std::cmp::Ordering;
use std::fmt;

/// The header every CDC record carries its source position in.
pub const POS_HEADER: &str = "sluice.pos";
/// Marks a record that only says "the source reached this position": not a row. Tables skip
/// it (it moves their source position); its key is [`HEARTBEAT_KEY`].
pub const HEARTBEAT_HEADER: &str = "sluice.heartbeat";
/// Marks a row of an initial copy. Its position is the copy's, which the source reaches
/// only once the whole copy is written: readers ignore the position of such records
/// (the heartbeat the connector writes after the copy carries it). A partition whose
/// last record carries it holds a copy that did not finish.
pub const SNAPSHOT_HEADER: &str = "sluice.snapshot";
/// The key of heartbeat records (one per partition survives compaction).
pub const HEARTBEAT_KEY: &[u8] = b"__sluice_heartbeat";
/// Marks a truncate marker: the source emptied the table (`TRUNCATE`) at this record's
/// position. Not a row: readers skip it (its key is [`TRUNCATE_KEY`]); the rows it removed
/// are tombstoned by the records before it, in the same transaction (docs/cdc.md).
pub const TRUNCATE_HEADER: &str = "sluice.truncate";
/// The key of truncate markers (one per partition survives compaction: the latest).
pub const TRUNCATE_KEY: &[u8] = b"__sluice_truncate";

/// A Postgres WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not a Postgres LSN (like 0/16B3748)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// One MariaDB GTID: domain-server-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = String;
    fn from_str(s: &str) -> Result<Gtid, String> {
        let bad = || format!("{s:?} is not a MariaDB GTID (like 0-1-42)");
        let mut it = s.trim().splitn(3, '-');
        let mut next = || it.next().ok_or_else(bad);
        let domain = next()?.parse().map_err(|_| bad())?;
        let server = next()?.parse().map_err(|_| bad())?;
        let seq = next()?.parse().map_err(|_| bad())?;
        Ok(Gtid {
            domain,
            server,
            seq,
        })
    }
}

/// A GTID state: the last GTID of each replication domain, sorted by domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GtidSet(Vec<Gtid>);

impl GtidSet {
    pub fn new(mut gtids: Vec<Gtid>) -> GtidSet {
        gtids.sort_by_key(|g| g.domain);
        gtids.dedup_by_key(|g| g.domain);
        GtidSet(gtids)
    }
    pub fn gtids(&self) -> &[Gtid] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Records `g` as its domain's latest.
    pub fn apply(&mut self, g: Gtid) {
        match self.0.binary_search_by_key(&g.domain, |x| x.domain) {
            Ok(i) => self.0[i] = g,
            Err(i) => self.0.insert(i, g),
        }
    }
    /// The last GTID of `domain`, if the state has one.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.0
            .binary_search_by_key(&domain, |g| g.domain)
            .ok()
            .map(|i| self.0[i])
    }

    /// Stream order of two GTID states of one history: within a domain by sequence
    /// number (a domain a state lacks is before its first GTID), and one state is before
    /// another when no domain of it is ahead. `None` when neither state is at or past
    /// the other in every domain, or when a domain holds the same sequence number from
    /// two different servers: states of different histories.
    pub fn compare(&self, other: &GtidSet) -> Option<Ordering> {
        let (mut less, mut greater) = (false, false);
        let domains = self.0.iter().chain(&other.0).map(|g| g.domain);
        for d in domains {
            match (self.get(d), other.get(d)) {
                (Some(a), Some(b)) if a.seq == b.seq && a.server != b.server => return None,
                (a, b) => match a.map_or(0, |g| g.seq).cmp(&b.map_or(0, |g| g.seq)) {
                    Ordering::Less => less = true,
                    Ordering::Greater => greater = true,
                    Ordering::Equal => {}
                },
            }
        }
        match (less, greater) {
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (true, true) => None,
        }
    }

    /// Every domain of `other` is at or past its sequence here.
    pub fn contains(&self, other: &GtidSet) -> bool {
        other.0.iter().all(|o| {
            self.0
                .iter()
                .any(|s| s.domain == o.domain && s.seq >= o.seq)
        })
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for GtidSet {
    type Err = String;
    fn from_str(s: &str) -> Result<GtidSet, String> {
        let gtids = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Gtid>, String>>()?;
        Ok(GtidSet::new(gtids))
    }
}

/// A binlog coordinate. Files compare by their numeric suffix (`mysql-bin.000010` after
/// `mysql-bin.000009`), then by offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPos {
    pub file: String,
    pub offset: u64,
}

impl BinlogPos {
    fn key(&self) -> (u64, u64) {
        let index = self
            .file
            .rsplit('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (index, self.offset)
    }
}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &BinlogPos) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BinlogPos {
    fn cmp(&self, other: &BinlogPos) -> Ordering {
        self.key()
            .cmp(&other.key())
            .then_with(|| self.file.cmp(&other.file))
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// Where a source's stream is: after a transaction, or (heartbeat) past everything
/// before this point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourcePos {
    Postgres(Lsn),
    Mysql { binlog: BinlogPos, gtids: GtidSet },
}

impl SourcePos {
    /// Stream order between two positions of the same source; `None` across kinds.
    ///
    /// MariaDB positions are ordered by their GTID states when both carry one and the
    /// states are of one history ([`GtidSet::compare`]): a binlog reset or a failover
    /// renumbers files (the new primary's, or `RESET MASTER`'s, may sort lower) but not
    /// GTIDs. By binlog file:offset otherwise (MySQL, a server with no GTID yet).
    pub fn compare(&self, other: &SourcePos) -> Option<Ordering> {
        match (self, other) {
            (SourcePos::Postgres(a), SourcePos::Postgres(b)) => Some(a.cmp(b)),
            (
                SourcePos::Mysql {
                    binlog: a,
                    gtids: ga,
                },
                SourcePos::Mysql {
                    binlog: b,
                    gtids: gb,
                },
            ) => {
                let by_gtid = match ga.is_empty() || gb.is_empty() {
                    true => None,
                    false => ga.compare(gb),
                };
                Some(by_gtid.unwrap_or_else(|| a.cmp(b)))
            }
            _ => None,
        }
    }

    /// Whether a reader that applied everything up to `self` has seen `request`.
    pub fn reached(&self, request: &PosRequest) -> bool {
        match (self, request) {
            (SourcePos::Postgres(a), PosRequest::Lsn(r)) => a >= r,
            (SourcePos::Mysql { gtids, .. }, PosRequest::Gtids(r)) => gtids.contains(r),
            (SourcePos::Mysql { binlog, .. }, PosRequest::Binlog(r)) => binlog >= r,
            _ => false,
        }
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePos::Postgres(lsn) => write!(f, "pg:{lsn}"),
            SourcePos::Mysql { binlog, gtids } => write!(f, "my:{binlog}:{gtids}"),
        }
    }
}

impl std::str::FromStr for SourcePos {
    type Err = String;
    fn from_str(s: &str) -> Result<SourcePos, String> {
        if let Some(lsn) = s.strip_prefix("pg:") {
            return Ok(SourcePos::Postgres(lsn.parse()?));
        }
        if let Some(rest) = s.strip_prefix("my:") {
            // file:offset:gtids — the file name has no ':' (MariaDB forbids it in
            // log-bin's base name on every platform it runs on).
            let bad = || format!("{s:?} is not a binlog position (my:FILE:OFFSET:GTIDS)");
            let mut it = rest.splitn(3, ':');
            let file = it.next().filter(|f| !f.is_empty()).ok_or_else(bad)?;
            let offset = it.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
            let gtids = it.next().unwrap_or("").parse()?;
            return Ok(SourcePos::Mysql {
                binlog: BinlogPos {
                    file: file.to_string(),
                    offset,
                },
                gtids,
            });
        }
        Err(format!("{s:?} is not a source position (pg:… or my:…)"))
    }
}

/// The value of a `sluice.pos` header: the position and the record's ordinal in its
/// transaction. Records of one partition come in increasing (position, ordinal) order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordPos {
    pub pos: SourcePos,
    pub ordinal: u64,
}

impl RecordPos {
    /// Stream order (position, then ordinal); `None` across source kinds.
    pub fn compare(&self, other: &RecordPos) -> Option<Ordering> {
        self.pos
            .compare(&other.pos)
            .map(|o| o.then(self.ordinal.cmp(&other.ordinal)))
    }

    pub fn to_header(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn from_header(value: &[u8]) -> Result<RecordPos, String> {
        std::str::from_utf8(value)
            .map_err(|_| "a sluice.pos header that is not UTF-8".to_string())?
            .parse()
    }
}

impl fmt::Display for RecordPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.pos, self.ordinal)
    }
}

impl std::str::FromStr for RecordPos {
    type Err = String;
    fn from_str(s: &str) -> Result<RecordPos, String> {
        let (pos, ordinal) = s
            .rsplit_once('#')
            .ok_or_else(|| format!("{s:?} is not a record position (POSITION#ORDINAL)"))?;
        let ordinal = ordinal
            .parse()
            .map_err(|_| format!("{s:?}: the ordinal is not a number"))?;
        Ok(RecordPos {
            pos: pos.parse()?,
            ordinal,
        })
    }
}

/// What an application waits for after its own commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosRequest {
    /// `pg_current_wal_lsn()`.
    Lsn(Lsn),
    /// `@@gtid_binlog_pos`.
    Gtids(GtidSet),
    /// `SHOW MASTER STATUS`'s file and position.
    Binlog(BinlogPos),
}

impl std::str::FromStr for PosRequest {
    type Err = String;
    /// `0/16B3748` (LSN), `0-1-42[,1-2-7]` (GTIDs), `mysql-bin.000003:1234` (binlog).
    fn from_str(s: &str) -> Result<PosRequest, String> {
        let s = s.trim();
        if s.contains('/') {
            return Ok(PosRequest::Lsn(s.parse()?));
        }
        if let Some((file, offset)) = s.rsplit_once(':') {
            let offset = offset
                .parse()
                .map_err(|_| format!("{s:?}: the binlog offset is not a number"))?;
            return Ok(PosRequest::Binlog(BinlogPos {
                file: file.to_string(),
                offset,
            }));
        }
        if s.contains('-') {
            return Ok(PosRequest::Gtids(s.parse()?));
        }
        Err(format!(
            "{s:?} is not a source position: give a Postgres LSN (0/16B3748), a MariaDB GTID \
             set (0-1-42) or a binlog file:offset"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_and_parse_as_postgres_does() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn record_positions_round_trip_and_order() {
        for s in [
            "pg:0/16B3748#0",
            "pg:1/0#17",
            "my:mysql-bin.000003:1234:0-1-42,1-2-7#3",
            "my:mysql-bin.000003:1234:#0",
        ] {
            let p: RecordPos = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(RecordPos::from_header(&p.to_header()).unwrap(), p);
        }
        let a: RecordPos = "my:b.000009:900:#5".parse().unwrap();
        let b: RecordPos = "my:b.000010:4:#0".parse().unwrap();
        assert_eq!(a.compare(&b), Some(Ordering::Less));
        let c: RecordPos = "pg:0/10#1".parse().unwrap();
        let d: RecordPos = "pg:0/10#2".parse().unwrap();
        assert_eq!(c.compare(&d), Some(Ordering::Less));
        assert_eq!(a.compare(&c), None);
        for bad in ["pg:0/10", "pg:zz#1", "xx:1#1", "my::1:#0", "pg:0/1#x"] {
            assert!(bad.parse::<RecordPos>().is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_reached_by_later_positions_only() {
        let pg = |s: &str| SourcePos::Postgres(s.parse().unwrap());
        let req: PosRequest = "0/16B3748".parse().unwrap();
        assert!(pg("0/16B3748").reached(&req));
        assert!(pg("1/0").reached(&req));
        assert!(!pg("0/16B3747").reached(&req));
        let my: SourcePos = "my:bin.000002:50:0-1-42,1-2-7".parse().unwrap();
        assert!(my.reached(&"0-1-42".parse().unwrap()));
        assert!(my.reached(&"0-1-40,1-2-7".parse().unwrap()));
        assert!(!my.reached(&"0-1-43".parse().unwrap()));
        assert!(!my.reached(&"2-1-1".parse().unwrap()));
        assert!(my.reached(&"bin.000001:999".parse().unwrap()));
        assert!(!my.reached(&"bin.000002:51".parse().unwrap()));
        assert!(!pg("9/0").reached(&"0-1-1".parse().unwrap()));
        assert!("hello".parse::<PosRequest>().is_err());
    }

    #[test]
    fn mariadb_positions_order_by_gtid_within_a_domain_and_by_file_without_gtids() {
        let my = |s: &str| s.parse::<SourcePos>().unwrap();
        // After RESET MASTER (the GTID state carried over) or a failover, files start
        // again at a lower index: the GTIDs still say which change came later.
        let before = my("my:mysql-bin.000003:900:0-1-50");
        let after = my("my:mysql-bin.000001:400:0-1-51");
        assert_eq!(before.compare(&after), Some(Ordering::Less));
        assert_eq!(after.compare(&before), Some(Ordering::Greater));
        // A heartbeat at the same state elsewhere in the binlog is the same point.
        assert_eq!(
            my("my:mysql-bin.000001:400:0-1-50").compare(&before),
            Some(Ordering::Equal)
        );
        // Failover to a server of another server_id, same domain.
        assert_eq!(
            before.compare(&my("my:other-bin.000001:200:0-2-51")),
            Some(Ordering::Less)
        );
        // Several domains: ahead in one, level in the rest; a missing domain is before
        // its first GTID.
        let two = my("my:b.000002:10:0-1-50,1-1-7");
        assert_eq!(before.compare(&two), Some(Ordering::Less));
        assert_eq!(
            two.compare(&my("my:b.000001:10:0-1-50,1-1-8")),
            Some(Ordering::Less)
        );
        // Without GTIDs on either side, or states of different histories: file:offset.
        let plain = my("my:b.000002:10:");
        assert_eq!(
            plain.compare(&my("my:b.000001:99:0-1-1")),
            Some(Ordering::Greater)
        );
        let crossed = my("my:b.000001:10:0-1-60,1-1-1");
        assert_eq!(crossed.compare(&two), Some(Ordering::Less));
        assert_eq!(
            my("my:b.000009:10:0-2-50").compare(&before),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn gtid_states_compare_per_domain() {
        let g = |s: &str| s.parse::<GtidSet>().unwrap();
        assert_eq!(g("0-1-5").compare(&g("0-1-5")), Some(Ordering::Equal));
        assert_eq!(g("0-1-5").compare(&g("0-2-6")), Some(Ordering::Less));
        assert_eq!(g("0-1-5").compare(&g("0-1-5,1-1-1")), Some(Ordering::Less));
        assert_eq!(
            g("0-1-6,1-1-1").compare(&g("0-1-5,1-1-1")),
            Some(Ordering::Greater)
        );
        assert_eq!(g("0-1-6,1-1-1").compare(&g("0-1-5,1-1-2")), None);
        assert_eq!(
            g("0-1-5").compare(&g("0-2-5")),
            None,
            "two servers, one seq"
        );
        assert_eq!(g("").compare(&g("0-1-1")), Some(Ordering::Less));
    }

    #[test]
    fn a_gtid_set_keeps_the_latest_per_domain() {
        let mut s: GtidSet = "1-2-7,0-1-40".parse().unwrap();
        s.apply("0-1-41".parse().unwrap());
        s.apply("3-1-1".parse().unwrap());
        assert_eq!(s.to_string(), "0-1-41,1-2-7,3-1-1");
    }
}
