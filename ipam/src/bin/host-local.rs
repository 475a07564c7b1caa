//! The `host-local` IPAM plugin.
fn main() {
    cni::skel::run(ipam::HostLocal)
}
