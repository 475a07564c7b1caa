//! `dnsname`: the CNI plugin, and with `serve` the DNS responder it starts.
fn main() -> std::process::ExitCode {
    netkit::nft::watch::serve_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return dns::responder::main(&args[1..]);
    }
    cni::skel::run(dns::Dnsname)
}
