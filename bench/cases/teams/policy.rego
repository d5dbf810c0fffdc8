package teams.authz

# A caller is allowed when one of their groups carries the permission, or when they are in
# the operators group, which may do anything.

default allow := false

allow if "operators" in data.membership[input.caller]

allow if {
	some group in data.membership[input.caller]
	some permission in data.permissions[group]
	permission.verb == input.verb
	glob.match(permission.resource, ["/"], input.resource)
}

groups contains group if some group in data.membership[input.caller]
