//! The `bridge` CNI plugin.
fn main() {
    netkit::nft::watch::serve_if_asked();
    cni::skel::run(bridge::Bridge)
}
