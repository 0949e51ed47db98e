//! Prints what the running kernel supports and the tier order sonde would use.
fn main() {
    let f = sonde::Features::current();
    print!("{f}");
}
