-- kubectl finetune rollback ROLLOUT: the version stable before the current one. A version that
-- is Rejected or was aborted is refused (condition RollbackAccepted=False); --to and --force
-- stay with the CLI, for the rare rollback that needs them.
return request("rollbackRequest", {})
