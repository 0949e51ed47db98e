//! `timed BINARY PATTERN -- COMMAND...` (guide §3, sessions): per function
//! PATTERN selects, the calls with a non-zero first argument and their time,
//! as `name calls ns`.

use sonde::maps::HashMap;
use sonde::{AttachOptions, Command, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: timed BINARY PATTERN -- COMMAND...";

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
    let attachment = object
        .uprobe("timed")?
        .attach_sites(set.targets(), &AttachOptions::default().pid(command.pid()))?;
    eprintln!("sessions: {:?}", attachment.session());
    command.release()?;
    command.wait();
    let calls = HashMap::<u64, u64>::new(object.map("TIMED")?)?;
    let time = HashMap::<u64, u64>::new(object.map("TIMED_NS")?)?;
    for f in set.iter() {
        let n = calls.get(&f.cookie)?.unwrap_or(0);
        let ns = time.get(&f.cookie)?.unwrap_or(0);
        println!("{} {n} {ns}", set.label(f));
    }
    Ok(())
}
