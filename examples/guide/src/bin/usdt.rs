//! `usdt BINARY PROBE-PATTERN -- COMMAND...` (guide §8): each hit of the USDT
//! probes the pattern selects (e.g. `usdt:provider:*`), with its first
//! argument as the probe's note says where it is.

#[path = "../event.rs"]
mod event;

use event::Event;
use sonde::{AttachOptions, Command, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
const USAGE: &str = "usage: usdt BINARY PROBE-PATTERN -- COMMAND...";

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
    // Each site's argument spec, at its attach cookie.
    let specs = object.usdt_specs()?;
    for f in set.iter() {
        if let Some(probe) = &f.usdt {
            specs.set(f.cookie as u32, &probe.spec(f.cookie)?)?;
        }
    }
    let _attachment = object
        .uprobe("request")?
        .attach_sites(set.targets(), &AttachOptions::default().pid(command.pid()))?;
    let mut ring = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
    ring.until_exit(command.pid())?;
    command.release()?;
    ring.read_until_exit(|record| {
        if let Ok(event) = record.read::<Event>() {
            let name = set.get(event.cookie).map(|f| set.label(f)).unwrap_or_default();
            println!("{name} {}", event.arg0 as i64);
        }
        true
    })?;
    command.wait();
    Ok(())
}
