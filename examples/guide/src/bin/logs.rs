//! `logs BINARY PATTERN -- COMMAND...` (guide §6): the program's log lines,
//! each call's cookie and the string its first argument points to.

use sonde::{AttachOptions, Command, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: logs BINARY PATTERN -- COMMAND...";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, pattern, sep, command @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    if sep != "--" || command.is_empty() {
        return Err(USAGE.into());
    }
    let mut command = Command::spawn(command)?;
    let set = Functions::in_binary(binary)
        .pattern(pattern)
        .pid(command.pid())
        .resolve()?;
    let mut object = Object::load_static(PROBES)?;
    let _attachment = object
        .uprobe("logged")?
        .attach_sites(set.targets(), &AttachOptions::default().pid(command.pid()))?;
    command.release()?;
    command.wait();
    let mut logs = sonde::log::LogReader::new(PROBES, &object)?;
    while let Some((level, line)) = logs.next_line() {
        println!("{level} {line}");
    }
    Ok(())
}
