-- kubectl finetune promote ROLLOUT --full
return request("promoteRequest", {full = true})
