"""What the stages share: artifacts and keys, the stage registry and decorator, config loading, tracking,
the model registry, parallel maps over shards. `ls tasks` lists the stages; this is the machinery."""
