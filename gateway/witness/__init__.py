"""A tlog witness (`tunegate witness serve`): its store, its HTTP app, and the gateway's
pusher that sends every new audit checkpoint to the configured witnesses."""
