//! Figures of a cgroup v1 container: each controller's files read into containerd's
//! `io.containerd.cgroups.v1.Metrics`, as containerd's own cgroups library reads them.

use super::{huge_page_sizes, Dir};
use crate::error::Result;
use crate::protos::cgroups_v1::*;
use protobuf::MessageField;
use std::collections::HashMap;
use std::path::PathBuf;

/// cpuacct.stat counts in USER_HZ ticks, 100 a second on every Linux ABI.
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

pub fn metrics(paths: &HashMap<String, PathBuf>) -> Result<Metrics> {
    let dir = |controller: &str| paths.get(controller).map(|p| Dir(p.as_path()));
    let mut m = Metrics::new();
    if let Some(d) = dir("pids") {
        m.pids = MessageField::some(pids(&d)?);
    }
    if let Some(d) = dir("cpuacct") {
        let throttle = dir("cpu");
        m.cpu = MessageField::some(cpu(&d, throttle.as_ref())?);
    }
    if let Some(d) = dir("memory") {
        m.memory = MessageField::some(memory(&d)?);
        m.memory_oom_control = MessageField::some(oom_control(&d)?);
    }
    if let Some(d) = dir("blkio") {
        m.blkio = MessageField::some(blkio(&d)?);
    }
    if let Some(d) = dir("hugetlb") {
        m.hugetlb = hugetlb(&d)?;
    }
    Ok(m)
}

fn pids(d: &Dir) -> Result<PidsStat> {
    Ok(PidsStat {
        current: d.number("pids.current", 0)?.unwrap_or(0),
        // No limit reads as 0, as containerd reports it.
        limit: d.number("pids.max", 0)?.unwrap_or(0),
        ..Default::default()
    })
}

fn cpu(acct: &Dir, cpu: Option<&Dir>) -> Result<CPUStat> {
    let mut usage = CPUUsage {
        total: acct.number("cpuacct.usage", 0)?.unwrap_or(0),
        per_cpu: acct
            .read("cpuacct.usage_percpu")?
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    for (key, ticks) in acct.keyed("cpuacct.stat")? {
        match key.as_str() {
            "user" => usage.user = ticks * NANOS_PER_TICK,
            "system" => usage.kernel = ticks * NANOS_PER_TICK,
            _ => {}
        }
    }
    let mut throttling = Throttle::new();
    if let Some(cpu) = cpu {
        for (key, value) in cpu.keyed("cpu.stat")? {
            match key.as_str() {
                "nr_periods" => throttling.periods = value,
                "nr_throttled" => throttling.throttled_periods = value,
                "throttled_time" => throttling.throttled_time = value,
                _ => {}
            }
        }
    }
    Ok(CPUStat {
        usage: MessageField::some(usage),
        throttling: MessageField::some(throttling),
        ..Default::default()
    })
}

fn memory(d: &Dir) -> Result<MemoryStat> {
    let mut m = MemoryStat::new();
    for (key, v) in d.keyed("memory.stat")? {
        let field = match key.as_str() {
            "cache" => &mut m.cache,
            "rss" => &mut m.rss,
            "rss_huge" => &mut m.rss_huge,
            "mapped_file" => &mut m.mapped_file,
            "dirty" => &mut m.dirty,
            "writeback" => &mut m.writeback,
            "pgpgin" => &mut m.pg_pg_in,
            "pgpgout" => &mut m.pg_pg_out,
            "pgfault" => &mut m.pg_fault,
            "pgmajfault" => &mut m.pg_maj_fault,
            "inactive_anon" => &mut m.inactive_anon,
            "active_anon" => &mut m.active_anon,
            "inactive_file" => &mut m.inactive_file,
            "active_file" => &mut m.active_file,
            "unevictable" => &mut m.unevictable,
            "hierarchical_memory_limit" => &mut m.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut m.hierarchical_swap_limit,
            "total_cache" => &mut m.total_cache,
            "total_rss" => &mut m.total_rss,
            "total_rss_huge" => &mut m.total_rss_huge,
            "total_mapped_file" => &mut m.total_mapped_file,
            "total_dirty" => &mut m.total_dirty,
            "total_writeback" => &mut m.total_writeback,
            "total_pgpgin" => &mut m.total_pg_pg_in,
            "total_pgpgout" => &mut m.total_pg_pg_out,
            "total_pgfault" => &mut m.total_pg_fault,
            "total_pgmajfault" => &mut m.total_pg_maj_fault,
            "total_inactive_anon" => &mut m.total_inactive_anon,
            "total_active_anon" => &mut m.total_active_anon,
            "total_inactive_file" => &mut m.total_inactive_file,
            "total_active_file" => &mut m.total_active_file,
            "total_unevictable" => &mut m.total_unevictable,
            _ => continue,
        };
        *field = v;
    }
    m.usage = memory_entry(d, "memory")?;
    m.swap = memory_entry(d, "memory.memsw")?;
    m.kernel = memory_entry(d, "memory.kmem")?;
    m.kernel_tcp = memory_entry(d, "memory.kmem.tcp")?;
    Ok(m)
}

/// The usage, max usage, failure count and limit files under one prefix; absent (no swap
/// or kernel memory accounting) when the kernel offers none of them.
fn memory_entry(d: &Dir, prefix: &str) -> Result<MessageField<MemoryEntry>> {
    let usage = d.number(&format!("{prefix}.usage_in_bytes"), 0)?;
    let Some(usage) = usage else {
        return Ok(MessageField::none());
    };
    Ok(MessageField::some(MemoryEntry {
        usage,
        max: d
            .number(&format!("{prefix}.max_usage_in_bytes"), 0)?
            .unwrap_or(0),
        failcnt: d.number(&format!("{prefix}.failcnt"), 0)?.unwrap_or(0),
        limit: d
            .number(&format!("{prefix}.limit_in_bytes"), 0)?
            .unwrap_or(0),
        ..Default::default()
    }))
}

fn oom_control(d: &Dir) -> Result<MemoryOomControl> {
    let mut c = MemoryOomControl::new();
    for (key, v) in d.keyed("memory.oom_control")? {
        match key.as_str() {
            "oom_kill_disable" => c.oom_kill_disable = v,
            "under_oom" => c.under_oom = v,
            "oom_kill" => c.oom_kill = v,
            _ => {}
        }
    }
    Ok(c)
}

fn blkio(d: &Dir) -> Result<BlkIOStat> {
    let mut devices = HashMap::new();
    let mut entries = |file: &str| -> Result<Vec<BlkIOEntry>> {
        Ok(d.read(file)?
            .map(|t| blkio_entries(&t, &mut devices))
            .unwrap_or_default())
    };
    let mut s = BlkIOStat {
        io_service_bytes_recursive: entries("blkio.io_service_bytes_recursive")?,
        io_serviced_recursive: entries("blkio.io_serviced_recursive")?,
        io_queued_recursive: entries("blkio.io_queued_recursive")?,
        io_service_time_recursive: entries("blkio.io_service_time_recursive")?,
        io_wait_time_recursive: entries("blkio.io_wait_time_recursive")?,
        io_merged_recursive: entries("blkio.io_merged_recursive")?,
        io_time_recursive: entries("blkio.time_recursive")?,
        sectors_recursive: entries("blkio.sectors_recursive")?,
        ..Default::default()
    };
    // Without a proportional-weight scheduler (CFQ/BFQ) only the throttle files count.
    if s.io_service_bytes_recursive.is_empty() {
        s.io_service_bytes_recursive = entries("blkio.throttle.io_service_bytes")?;
        s.io_serviced_recursive = entries("blkio.throttle.io_serviced")?;
    }
    Ok(s)
}

/// `major:minor [op] value` lines; the `Total` line is not a device's.
fn blkio_entries(text: &str, devices: &mut HashMap<(u64, u64), String>) -> Vec<BlkIOEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (device, op, value) = match fields.as_slice() {
                [device, op, value] => (*device, *op, *value),
                [device, value] => (*device, "", *value),
                _ => return None,
            };
            let (major, minor) = device.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            let name = devices
                .entry((major, minor))
                .or_insert_with(|| device_name(major, minor))
                .clone();
            Some(BlkIOEntry {
                op: op.to_string(),
                device: name,
                major,
                minor,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

/// `/dev/<name>` of a block device, from sysfs; empty when the kernel does not say.
fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_default()
}

fn hugetlb(d: &Dir) -> Result<Vec<HugetlbStat>> {
    let mut stats = Vec::new();
    for size in huge_page_sizes() {
        let file = |what: &str| format!("hugetlb.{size}.{what}");
        let Some(usage) = d.number(&file("usage_in_bytes"), 0)? else {
            continue;
        };
        stats.push(HugetlbStat {
            usage,
            max: d.number(&file("max_usage_in_bytes"), 0)?.unwrap_or(0),
            failcnt: d.number(&file("failcnt"), 0)?.unwrap_or(0),
            pagesize: size,
            ..Default::default()
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    #[test]
    fn v1_files_become_containerds_fields() {
        let fx = Fixture::new(
            "v1",
            &[
                ("pids.current", "4\n"),
                ("pids.max", "max\n"),
                ("cpuacct.usage", "123456789\n"),
                ("cpuacct.usage_percpu", "100 200 \n"),
                ("cpuacct.stat", "user 7\nsystem 3\n"),
                (
                    "cpu.stat",
                    "nr_periods 10\nnr_throttled 2\nthrottled_time 999\n",
                ),
                (
                    "memory.stat",
                    "cache 4096\nrss 33554432\npgpgin 5\ntotal_rss 33554432\n\
                     hierarchical_memory_limit 67108864\nunknown_field 1\n",
                ),
                ("memory.usage_in_bytes", "34000000\n"),
                ("memory.max_usage_in_bytes", "35000000\n"),
                ("memory.failcnt", "0\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                (
                    "blkio.throttle.io_service_bytes",
                    "8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n",
                ),
            ],
        );
        let paths: HashMap<String, PathBuf> = ["pids", "cpu", "cpuacct", "memory", "blkio"]
            .iter()
            .map(|c| (c.to_string(), fx.0.clone()))
            .collect();
        let m = metrics(&paths).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (4, 0));
        let cpu = &m.cpu;
        assert_eq!(cpu.usage.total, 123456789);
        assert_eq!(cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!((cpu.usage.user, cpu.usage.kernel), (70_000_000, 30_000_000));
        assert_eq!(
            (
                cpu.throttling.periods,
                cpu.throttling.throttled_periods,
                cpu.throttling.throttled_time
            ),
            (10, 2, 999)
        );
        let mem = &m.memory;
        assert_eq!((mem.cache, mem.rss, mem.pg_pg_in), (4096, 33554432, 5));
        assert_eq!(mem.total_rss, 33554432);
        assert_eq!(mem.hierarchical_memory_limit, 67108864);
        assert_eq!(
            (mem.usage.usage, mem.usage.max, mem.usage.limit),
            (34000000, 35000000, 67108864)
        );
        assert!(mem.swap.is_none(), "no swap accounting, no swap entry");
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        let io = &m.blkio.io_service_bytes_recursive;
        assert_eq!(io.len(), 2, "{io:?}");
        assert_eq!(
            (io[1].op.as_str(), io[1].major, io[1].value),
            ("Write", 8, 8192)
        );
    }
}
