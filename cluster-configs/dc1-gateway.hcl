# dc1's gateway node.
datacenter         = "dc1"
primary_datacenter = "dc1"
node_name          = "dc1-gateway"
data_dir           = "cluster-data/dc1-gateway"
bind_addr          = "127.0.1.2"
client_addr        = "127.0.1.2"
retry_join         = ["127.0.1.1"]
encrypt            = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="
log_level          = "INFO"

connect {
  enabled = true
}
enable_central_service_config = true
