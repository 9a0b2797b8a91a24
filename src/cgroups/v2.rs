//! Figures of a container on a unified (cgroup v2) host: its one directory read into
//! containerd's `io.containerd.cgroups.v2.Metrics`.

use super::{huge_page_sizes, Dir};
use crate::error::Result;
use crate::protos::cgroups_v2::*;
use protobuf::MessageField;
use std::path::Path;

pub fn metrics(path: &Path) -> Result<Metrics> {
    let d = Dir(path);
    let mut m = Metrics::new();
    m.pids = MessageField::some(PidsStat {
        current: d.number("pids.current", 0)?.unwrap_or(0),
        limit: d.number("pids.max", 0)?.unwrap_or(0),
        ..Default::default()
    });
    m.cpu = MessageField::some(cpu(&d)?);
    m.memory = MessageField::some(memory(&d)?);
    m.memory_events = MessageField::some(memory_events(&d)?);
    m.io = MessageField::some(io(&d)?);
    m.hugetlb = hugetlb(&d)?;
    Ok(m)
}

fn cpu(d: &Dir) -> Result<CPUStat> {
    let mut c = CPUStat::new();
    for (key, v) in d.keyed("cpu.stat")? {
        let field = match key.as_str() {
            "usage_usec" => &mut c.usage_usec,
            "user_usec" => &mut c.user_usec,
            "system_usec" => &mut c.system_usec,
            "nr_periods" => &mut c.nr_periods,
            "nr_throttled" => &mut c.nr_throttled,
            "throttled_usec" => &mut c.throttled_usec,
            _ => continue,
        };
        *field = v;
    }
    Ok(c)
}

fn memory(d: &Dir) -> Result<MemoryStat> {
    let mut m = MemoryStat::new();
    for (key, v) in d.keyed("memory.stat")? {
        let field = match key.as_str() {
            "anon" => &mut m.anon,
            "file" => &mut m.file,
            "kernel_stack" => &mut m.kernel_stack,
            "slab" => &mut m.slab,
            "sock" => &mut m.sock,
            "shmem" => &mut m.shmem,
            "file_mapped" => &mut m.file_mapped,
            "file_dirty" => &mut m.file_dirty,
            "file_writeback" => &mut m.file_writeback,
            "anon_thp" => &mut m.anon_thp,
            "inactive_anon" => &mut m.inactive_anon,
            "active_anon" => &mut m.active_anon,
            "inactive_file" => &mut m.inactive_file,
            "active_file" => &mut m.active_file,
            "unevictable" => &mut m.unevictable,
            "slab_reclaimable" => &mut m.slab_reclaimable,
            "slab_unreclaimable" => &mut m.slab_unreclaimable,
            "pgfault" => &mut m.pgfault,
            "pgmajfault" => &mut m.pgmajfault,
            "workingset_refault" => &mut m.workingset_refault,
            "workingset_activate" => &mut m.workingset_activate,
            "workingset_nodereclaim" => &mut m.workingset_nodereclaim,
            "pgrefill" => &mut m.pgrefill,
            "pgscan" => &mut m.pgscan,
            "pgsteal" => &mut m.pgsteal,
            "pgactivate" => &mut m.pgactivate,
            "pgdeactivate" => &mut m.pgdeactivate,
            "pglazyfree" => &mut m.pglazyfree,
            "pglazyfreed" => &mut m.pglazyfreed,
            "thp_fault_alloc" => &mut m.thp_fault_alloc,
            "thp_collapse_alloc" => &mut m.thp_collapse_alloc,
            _ => continue,
        };
        *field = v;
    }
    // "max" (no limit) is the largest figure there is, as containerd reports it.
    m.usage = d.number("memory.current", u64::MAX)?.unwrap_or(0);
    m.usage_limit = d.number("memory.max", u64::MAX)?.unwrap_or(0);
    m.swap_usage = d.number("memory.swap.current", u64::MAX)?.unwrap_or(0);
    m.swap_limit = d.number("memory.swap.max", u64::MAX)?.unwrap_or(0);
    Ok(m)
}

fn memory_events(d: &Dir) -> Result<MemoryEvents> {
    let mut e = MemoryEvents::new();
    for (key, v) in d.keyed("memory.events")? {
        match key.as_str() {
            "low" => e.low = v,
            "high" => e.high = v,
            "max" => e.max = v,
            "oom" => e.oom = v,
            "oom_kill" => e.oom_kill = v,
            _ => {}
        }
    }
    Ok(e)
}

/// io.stat: `major:minor key=value ...` per device.
fn io(d: &Dir) -> Result<IOStat> {
    let text = d.read("io.stat")?.unwrap_or_default();
    let usage = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut e = IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in fields {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                let value = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => e.rbytes = value,
                    "wbytes" => e.wbytes = value,
                    "rios" => e.rios = value,
                    "wios" => e.wios = value,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect();
    Ok(IOStat {
        usage,
        ..Default::default()
    })
}

fn hugetlb(d: &Dir) -> Result<Vec<HugeTlbStat>> {
    let mut stats = Vec::new();
    for size in huge_page_sizes() {
        let Some(current) = d.number(&format!("hugetlb.{size}.current"), 0)? else {
            continue;
        };
        stats.push(HugeTlbStat {
            current,
            max: d
                .number(&format!("hugetlb.{size}.max"), u64::MAX)?
                .unwrap_or(0),
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
    use crate::error::Error;

    #[test]
    fn v2_files_become_containerds_fields() {
        let fx = Fixture::new(
            "v2",
            &[
                ("pids.current", "3\n"),
                ("pids.max", "100\n"),
                (
                    "cpu.stat",
                    "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 4\n\
                     nr_throttled 1\nthrottled_usec 70\n",
                ),
                (
                    "memory.stat",
                    "anon 33554432\nfile 8192\nslab 100\npgfault 12\nthp_collapse_alloc 2\n",
                ),
                ("memory.current", "34000000\n"),
                ("memory.max", "max\n"),
                ("memory.swap.current", "0\n"),
                ("memory.swap.max", "0\n"),
                ("memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n"),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
            ],
        );
        let m = metrics(&fx.0).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (5000, 3000, 2000)
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (4, 1, 70)
        );
        assert_eq!(
            (m.memory.anon, m.memory.file, m.memory.slab),
            (33554432, 8192, 100)
        );
        assert_eq!((m.memory.pgfault, m.memory.thp_collapse_alloc), (12, 2));
        assert_eq!(m.memory.usage, 34000000);
        assert_eq!(m.memory.usage_limit, u64::MAX, "max is no limit");
        assert_eq!((m.memory_events.oom, m.memory_events.oom_kill), (2, 1));
        let io = &m.io.usage;
        assert_eq!(io.len(), 1);
        assert_eq!(
            (
                io[0].major,
                io[0].rbytes,
                io[0].wbytes,
                io[0].rios,
                io[0].wios
            ),
            (8, 4096, 8192, 1, 2)
        );
    }

    #[test]
    fn a_v2_cgroup_that_vanished_is_not_found() {
        let fx = Fixture::new("v2gone", &[]);
        let gone = fx.0.join("c1");
        assert!(matches!(metrics(&gone), Err(Error::NotFound(_))));
    }
}
