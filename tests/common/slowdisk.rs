//! A slow disk for the multi-process tests (issue 18): an ext4 on a loop device whose
//! reads and writes the cgroup-v1 blkio controller throttles, in IOs or bytes a second.
//! This kernel has no device-mapper, so no `dm-delay` target (docs/storage.md). The
//! throttle is a rule for the device on the root blkio group, so it slows every process
//! that touches the device, the kernel's writeback threads included.
//!
//! Needs root, `losetup`, `mkfs.ext4`, `mount` and `/sys/fs/cgroup/blkio`:
//! [`SlowDisk::create`] says which one failed, so a test can leave the fault out with a
//! clear message. Every throttle is lifted, the filesystem unmounted and the loop device
//! detached on drop, including when a test panics; declare the disk before the processes
//! that use it so that they are gone first.

use std::path::{Path, PathBuf};
use std::process::Command;

const BLKIO: &str = "/sys/fs/cgroup/blkio/blkio.throttle";

/// Runs `program`; its trimmed stdout, or a line naming what failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An ext4 on a loop device, mounted at `mount`. Unthrottled, unmounted and detached on
/// drop.
pub struct SlowDisk {
    pub mount: PathBuf,
    device: String,
    /// `major:minor` of the loop device, as blkio wants it.
    devno: String,
    mounted: bool,
}

impl SlowDisk {
    /// A 256 MiB disk mounted at `dir/slow`; panics (naming what failed) when this
    /// machine cannot make one.
    pub fn new(dir: &Path) -> SlowDisk {
        SlowDisk::create(dir, 256 << 20).unwrap_or_else(|e| panic!("a slow disk: {e}"))
    }

    /// A sparse image of `bytes` in `dir`, attached to a free loop device, formatted
    /// ext4 and mounted at `dir/slow`. `Err` names what this machine lacks; nothing made
    /// before the failure is left behind.
    pub fn create(dir: &Path, bytes: u64) -> Result<SlowDisk, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("loop devices and blkio throttles need root".into());
        }
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        let device = run("losetup", &["-f", "--show", image.to_str().unwrap()])?;
        let mut disk = SlowDisk {
            mount: dir.join("slow"),
            device,
            devno: String::new(),
            mounted: false,
        };
        // From here on, dropping `disk` detaches the device.
        let hex = run("stat", &["-c", "%t:%T", &disk.device])?;
        let (major, minor) = hex
            .split_once(':')
            .ok_or_else(|| format!("stat {}: {hex}", disk.device))?;
        let number = |h: &str| u32::from_str_radix(h, 16).map_err(|e| format!("{h}: {e}"));
        disk.devno = format!("{}:{}", number(major)?, number(minor)?);
        // Also proves the blkio controller is there and writable; and a device number
        // is reused, so no rule a killed test left on it survives.
        disk.set("read_bps_device", 0)?;
        disk.unthrottle();
        run("mkfs.ext4", &["-q", &disk.device])?;
        std::fs::create_dir_all(&disk.mount).map_err(|e| e.to_string())?;
        run("mount", &[&disk.device, disk.mount.to_str().unwrap()])?;
        disk.mounted = true;
        Ok(disk)
    }

    /// `/dev/loopN`.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn set(&self, rule: &str, limit: u64) -> Result<(), String> {
        let path = format!("{BLKIO}.{rule}");
        std::fs::write(&path, format!("{} {limit}", self.devno)).map_err(|e| {
            format!("{path}: {e} (throttling needs root and the cgroup-v1 blkio controller)")
        })
    }

    /// Limits reads and writes to `iops` a second each (0: no limit).
    pub fn throttle(&self, iops: u32) {
        for rule in ["read_iops_device", "write_iops_device"] {
            self.set(rule, u64::from(iops)).unwrap();
        }
    }

    /// Limits reads and writes to `bytes_per_sec` each until the guard is dropped.
    pub fn throttle_bps(&self, bytes_per_sec: u64) -> Result<Throttled<'_>, String> {
        let guard = Throttled(self);
        for rule in ["read_bps_device", "write_bps_device"] {
            self.set(rule, bytes_per_sec)?;
        }
        Ok(guard)
    }

    /// Bytes the device has read and written since it was attached (the root blkio
    /// group's counters, which count every process's IO to it).
    pub fn served(&self) -> (u64, u64) {
        let stats =
            std::fs::read_to_string(format!("{BLKIO}.io_service_bytes")).unwrap_or_default();
        let count = |what: &str| {
            stats
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{} {what} ", self.devno)))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .sum()
        };
        (count("Read"), count("Write"))
    }

    /// Removes every limit on the device.
    pub fn unthrottle(&self) {
        for rule in [
            "read_iops_device",
            "write_iops_device",
            "read_bps_device",
            "write_bps_device",
        ] {
            let _ = self.set(rule, 0);
        }
    }
}

/// Writes every file under `dir` out and drops its pages from the page cache (those no
/// process has mapped), so that the next read of them goes to the disk; returns how many
/// bytes the files hold. Files and directories that vanish meanwhile (a broker deleting
/// segments) are skipped.
pub fn evict(dir: &Path) -> u64 {
    use std::os::unix::io::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut bytes = 0;
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            bytes += evict(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            if f.sync_all().is_ok() {
                // SAFETY: plain syscall on an open descriptor.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                bytes += f.metadata().map_or(0, |m| m.len());
            }
        }
    }
    bytes
}

/// A byte-rate throttle on a [`SlowDisk`], lifted on drop (also when a test panics).
pub struct Throttled<'a>(&'a SlowDisk);

impl Drop for Throttled<'_> {
    fn drop(&mut self) {
        self.0.unthrottle();
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        if !self.devno.is_empty() {
            self.unthrottle();
        }
        if self.mounted {
            let plain = Command::new("umount").arg(&self.mount).status();
            if !plain.is_ok_and(|s| s.success()) {
                // Something still has a file open: detach it from the tree now, the
                // kernel lets go of the device when the last user does.
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        // A device still busy (a lazy unmount) is detached once it is free.
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}
