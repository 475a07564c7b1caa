//! The `portmap` CNI plugin.
fn main() {
    cni::skel::run(portmap::Portmap)
}
