//! `events BINARY PATTERN -- COMMAND...` (guide §4): one record per call of
//! the functions PATTERN selects, through a ring buffer, printed as
//! `name first-argument` until COMMAND exits.

#[path = "../event.rs"]
mod event;

use event::Event;
use sonde::{AttachOptions, Command, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: events BINARY PATTERN -- COMMAND...";

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
        .uprobe("record")?
        .attach_sites(set.targets(), &AttachOptions::default().pid(command.pid()))?;
    let mut ring = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
    ring.until_exit(command.pid())?; // the loop below ends when the command does
    command.release()?;
    ring.read_until_exit(|record| {
        match record.read::<Event>() {
            Ok(event) => {
                let name = set.get(event.cookie).map(|f| set.label(f)).unwrap_or_default();
                println!("{name} {:#x}", event.arg0);
            }
            // A record shorter than Event is an error, not garbage; it names the fix.
            Err(e) => eprintln!("{e}"),
        }
        true // false stops early
    })?;
    command.wait();
    Ok(())
}
