//! The `bandwidth` CNI plugin.
fn main() {
    cni::skel::run(bandwidth::Bandwidth)
}
