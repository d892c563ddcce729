
ðíê*softprobe.injectJ 
http.response.status_codeÈJ
http.response.body
AP8=J'
http.response.body.encoding
base64J
sp.decision
mockJ
sp.rule.name
charge-binaryJ
sp.rule.layer	
sessionJ
sp.session.revision