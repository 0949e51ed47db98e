//! `forks -- COMMAND...` (guide §7): how many child processes COMMAND forked,
//! seen by a kernel tracepoint (`sched:sched_process_fork`).

use sonde::maps::{Array, HashMap};
use sonde::{Command, Object, TracePoint};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: forks -- COMMAND...";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sep, command @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    if sep != "--" || command.is_empty() {
        return Err(USAGE.into());
    }
    let mut command = Command::spawn(command)?;
    let mut object = Object::load_static(PROBES)?;
    let offset = TracePoint::field_offset("sched", "sched_process_fork", "child_pid")?;
    Array::<u32>::new(object.map("CHILD_PID_OFFSET")?)?.set(0, &offset)?;
    let _link = object.tracepoint("forks")?.attach()?;
    command.release()?;
    command.wait();
    let children = HashMap::<u32, u32>::new(object.map("CHILDREN")?)?;
    let mut forked = 0;
    for entry in children.iter()? {
        let (_child, parent) = entry?;
        if parent == command.pid() {
            forked += 1;
        }
    }
    println!("{forked} children");
    Ok(())
}
