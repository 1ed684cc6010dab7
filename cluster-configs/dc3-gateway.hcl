# dc3's gateway node.
datacenter         = "dc3"
primary_datacenter = "dc1"
node_name          = "dc3-gateway"
data_dir           = "cluster-data/dc3-gateway"
bind_addr          = "127.0.3.2"
client_addr        = "127.0.3.2"
retry_join         = ["127.0.3.1"]
encrypt            = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="
log_level          = "INFO"

connect {
  enabled = true
}
enable_central_service_config = true
