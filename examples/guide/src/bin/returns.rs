//! `returns BINARY PATTERN -- COMMAND...` (guide §3): the value each function
//! PATTERN selects last returned while COMMAND ran, as `name value`.

use sonde::maps::HashMap;
use sonde::{AttachOptions, Command, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: returns BINARY PATTERN -- COMMAND...";

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
        .uprobe("returns")?
        .attach_sites(set.targets(), &AttachOptions::default().pid(command.pid()))?;
    command.release()?;
    command.wait();
    let last = HashMap::<u64, u64>::new(object.map("LAST_RETURN")?)?;
    for f in set.iter() {
        if let Some(value) = last.get(&f.cookie)? {
            println!("{} {value}", set.label(f));
        }
    }
    Ok(())
}
