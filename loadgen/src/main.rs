//! `barge-loadgen`: runs Barge components and clusters under load.

fn main() {
    eprintln!("barge-loadgen: no subcommands are implemented yet");
    std::process::exit(2);
}
