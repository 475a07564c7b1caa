//! The `vrf` CNI plugin.
fn main() {
    cni::skel::run(vrf::Vrf)
}
