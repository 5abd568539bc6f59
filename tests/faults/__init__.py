"""A fault-injecting proxy that puts real failures between an exporter and a real backend."""
