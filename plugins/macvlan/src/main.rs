//! The `macvlan` CNI plugin.
fn main() {
    cni::skel::run(macvlan::Macvlan)
}
