"""Runtime lifecycle and its records: the operations (`create`, `lifecycle`, `status`,
`selfdestruct`, `reconcile`), request checks (`validate`), the per-device operation lock
(`registry`) and the state files (`journal`, `vnic_store`, `devicefile`)."""
