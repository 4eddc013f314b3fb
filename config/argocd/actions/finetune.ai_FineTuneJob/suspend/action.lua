-- kubectl finetune suspend FINETUNEJOB
obj.spec.suspend = true
return obj
