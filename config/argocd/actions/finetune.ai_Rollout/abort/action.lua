-- kubectl finetune abort ROLLOUT
return request("abortRequest", {})
