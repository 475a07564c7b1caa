//! `dhcp`: the CNI IPAM plugin, or with `daemon` as its first argument, the daemon.
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("daemon") {
        // Its own session: the runtime's terminal signals do not reach it.
        let _ = nix::unistd::setsid();
        let opts = match dhcp::daemon::Options::parse(&args[2..]) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("dhcp daemon: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        return match dhcp::daemon::run(opts) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dhcp daemon: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    cni::skel::run(dhcp::Dhcp)
}
