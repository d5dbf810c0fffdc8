# Kubernetes probes: GET /health/live and GET /health/ready.
package system.health

default live := true

default ready := false

ready if input.plugins_ready
