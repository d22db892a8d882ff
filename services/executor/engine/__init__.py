"""Engine access: the docker SDK handle (`docker_api`), the event watcher (`events`), the
live view of our containers (`liveview`), container calls (`containers`, `macfix`) and
finding the agent's own container (`selfinfo`)."""
