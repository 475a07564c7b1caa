//! The `static` IPAM plugin.
fn main() {
    cni::skel::run(ipam::Static)
}
