package catalog

# Point lookups in a large service catalogue: a caller may call a service owned by one of
# their teams, or a public service in the same environment, unless the service is retired.

default allow := false

service := data.services[input.service]

caller_teams contains team if {
	some team, members in data.teams
	input.caller in members
}

allow if {
	not "retired" in service.flags
	service.owner in caller_teams
}

allow if {
	not "retired" in service.flags
	service.visibility == "public"
	service.env == input.env
}
