-- kubectl finetune promote ROLLOUT
return request("promoteRequest", {full = false})
