"""Networks: the internal and MACVLAN networks on the engine (`networks`, `ipam`,
`names`), the host's interfaces as the network monitor reports them (`netinfo`), the
subnets each parent was seen to carry (`hostnets`) and each device's network events
(`netevents`)."""
