mod loom_ring;
